"""Bone against what bone encloses, and the skeleton's boundary on the original voxels.

On the working grid (ct_segmenter ``skeleton``):

- ``fill_cavities``: the holes of the cortex in each axial slice are marrow when small (up to 1 cm2, whatever their
  HU: a rib's cavity blurred with its cortex) or fatty (median at most fat's upper limit: yellow marrow of a long
  bone); larger holes of soft tissue's HU (the spinal canal, the ligaments between the laminae) are not bone. Red
  marrow comes in by the marrow rule (HU above ``marrow_hu`` inside the closed cortex).
- ``discs``: an intervertebral disc that the skeleton holds (between endplates bridged by the closing, or inside a
  ring of osteophytes) is dropped: a layer darker than bone with brighter bone above and below, at most
  ``DISC_MM`` apart, each the end of a bony body along the axis, in axial pieces of at least ``DISC_CM2``.

On the original voxels of the working voxels where bone meets another label (ct.py ``_refine``, ``bone_edges``):

- cavities: a voxel inside the working grid's skeleton that is not bone, not air, and enclosed in its slice by
  bone within ``CAVITY_MM`` in all eight in-plane directions is marrow: the fatty marrow of a rib (20-50 HU at 1 mm)
  inside its cortex;
- edge at half maximum: a bone voxel on the outer layer (next to a non-bone voxel in its slice) stays bone
  only if its HU is at least half-way from water (0 HU) to the brightest bone voxel within ``PEAK_VOXELS`` of it
  along the in-plane axes (the full-width-at-half-maximum rule of cortical edges on CT). A blurred edge puts the
  partial-volume voxels outside the cortex above a fixed threshold; a thin rib's dimmer cortex gets a lower
  threshold than the vertebra's. The threshold is never below ``bone_hu``.

Slices here are the image's as stored (axial for almost every CT): both rules hold in any plane.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .ct_grid import FLAT, label_medians

SMALL_CAVITY_CM2 = 1.0  # a hole of the cortex this small is marrow whatever its HU (a rib's cavity)
CAVITY_MM = 9.0  # reach of the eight rays that find a cavity enclosed by bone (a rib's marrow, 3-8 mm across, cut
# obliquely by the axial slice)
PEAK_VOXELS = 2  # the cortex peak is looked for this many voxels along each in-plane axis
WATER_HU = 0.0  # the level the edge's half maximum is taken from: between fat (-100) and muscle (50)
_IN_PLANE = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_AXES = [(0, 1), (0, -1), (1, 0), (-1, 0)]


def bone_constants() -> dict:
    """The fixed limits of the bone rules, for the provenance."""
    return {
        "cavity_cm2": SMALL_CAVITY_CM2,
        "cavity_mm": CAVITY_MM,
        "edge_peak_voxels": PEAK_VOXELS,
        "edge_base_hu": WATER_HU,
        "disc_mm": DISC_MM,
        "disc_cm2": DISC_CM2,
        "disc_body_mm": BODY_MM,
        "disc_contrast_hu": DISC_CONTRAST_HU,
    }


def bone_edges(out, original, cavities, skeleton, spacing, bone, body, bone_hu) -> None:
    """Re-decide the skeleton's boundary in ``out`` (original grid, label values ``bone`` and ``body``) on the
    ``original`` HU: ``cavities``, flat indices of the voxels that may be marrow in a cavity (not bone, inside the
    working grid's skeleton, not air); ``skeleton``: flat indices of the bone voxels of the blocks where bone meets
    another label; ``spacing``: (k, j, i) mm. See the module docstring."""
    flat, hu = out.reshape(-1), original.reshape(-1)
    if len(cavities):
        at = _InPlane(cavities, out.shape)
        for dy, dx in sorted(_IN_PLANE, key=lambda d: abs(d[0]) + abs(d[1])):  # axes first: most leave by them
            reach = max(1, int(np.ceil(CAVITY_MM / np.hypot(dy * spacing[1], dx * spacing[2]))))
            hit = np.zeros(len(at.index), bool)
            for s in range(1, reach + 1):
                hit |= flat[at.shifted(s * dy, s * dx)] == bone
            at.keep(hit)
            if not len(at.index):
                break
        flat[at.index] = bone
    at = _InPlane(skeleton, out.shape)
    edge = np.zeros(len(skeleton), bool)
    for dy, dx in _AXES:
        edge |= flat[at.shifted(dy, dx)] != bone
    at.keep(edge)
    values = hu[at.index].astype(np.float32)
    peak = values.copy()
    for dy, dx in _AXES:
        for s in range(1, PEAK_VOXELS + 1):
            other = at.shifted(s * dy, s * dx)
            peak = np.where(flat[other] == bone, np.maximum(peak, hu[other]), peak)
    flat[at.index[values < np.maximum(WATER_HU + 0.5 * (peak - WATER_HU), bone_hu)]] = body


class _InPlane:
    """Flat indices of voxels and of their in-plane neighbours (held at the slice's edges)."""

    def __init__(self, index, shape):
        self.index, self.rows, self.columns = index, shape[1], shape[2]
        self.y, self.x = (index // self.columns) % self.rows, index % self.columns  # the dtype of ``index``

    def keep(self, which) -> None:
        self.index, self.y, self.x = self.index[which], self.y[which], self.x[which]

    def shifted(self, dy: int, dx: int):
        y = np.clip(self.y + dy, 0, self.rows - 1) if dy else self.y
        x = np.clip(self.x + dx, 0, self.columns - 1) if dx else self.x
        return self.index + (y - self.y) * self.columns + (x - self.x)


def fill_cavities(cortex, hu, spacing, large: int, fat_hu: float) -> np.ndarray:
    """``cortex`` with the holes of each axial slice filled that are marrow: up to ``SMALL_CAVITY_CM2`` whatever
    their HU (a rib's cavity, blurred with its cortex), or up to ``large`` voxels with a median HU at most
    ``fat_hu`` (yellow, fatty marrow of a long bone). Larger holes of soft tissue's HU are not marrow: the spinal
    canal, the ligaments between the laminae. Red marrow comes in by the marrow rule (HU above ``marrow_hu``)."""
    small = int(SMALL_CAVITY_CM2 * 100.0 / (spacing[1] * spacing[2]))
    background, count = ndi.label(~cortex, FLAT)
    sizes = np.bincount(background.ravel(), minlength=count + 1)
    edge = np.unique(np.concatenate([background[:, [0, -1], :].ravel(), background[:, :, [0, -1]].ravel()]))
    hole = sizes <= large
    hole[edge] = False
    hole[0] = False
    medians = label_medians(hu, np.where(hole[background], background, 0), count)
    hole &= (sizes <= small) | (medians <= fat_hu)
    return cortex | hole[background]


# a disc is at most 12 mm high (lumbar), spans at least 2 cm2 (cervical), with 6 mm or more of vertebral body beyond
# each endplate, and its endplates at least 50 HU brighter than itself
DISC_MM, DISC_CM2, BODY_MM, DISC_CONTRAST_HU = 12.0, 2.0, 6.0, 50.0


def discs(bone, hu, spacing, bone_hu: float) -> np.ndarray:
    """The intervertebral discs that ``bone`` holds (filled between endplates, or inside a ring of osteophytes):
    voxels below ``bone_hu`` with brighter bone (``DISC_CONTRAST_HU`` above them and above ``bone_hu``) both above and
    below, at most ``DISC_MM`` apart, each the end of at least ``BODY_MM`` of bone along the axis (a vertebral body
    beyond each endplate, or the image's end; a tilted plate of bone, such as the lower sacrum, has soft tissue
    beyond its cortex), in axial pieces of at least ``DISC_CM2`` (a disc spans the vertebral body; marrow between
    bright trabeculae comes in small pieces)."""
    reach = max(1, int(DISC_MM // spacing[0]))
    candidate = bone & (hu < bone_hu)
    if not candidate.any():
        return candidate
    depth = max(1, int(np.ceil(BODY_MM / spacing[0])))
    up, down = _runs(bone, depth)  # bone runs for ``depth`` voxels from here upwards / downwards (or to the end)
    above, below = (np.full(hu.shape, reach + 1, np.int16) for _ in range(2))
    brighter = np.maximum(hu + DISC_CONTRAST_HU, bone_hu)
    for d in range(reach, 0, -1):
        above[:-d][(hu[d:] >= brighter[:-d]) & up[d:]] = d
        below[d:][(hu[:-d] >= brighter[d:]) & down[:-d]] = d
    disc = candidate & ((above + below - 1) * spacing[0] <= DISC_MM)
    pieces, count = ndi.label(disc, FLAT)
    big = np.bincount(pieces.ravel(), minlength=count + 1) * spacing[1] * spacing[2] >= DISC_CM2 * 100.0
    big[0] = False
    return big[pieces]


def _runs(mask, depth: int):
    """Whether ``mask`` holds from each voxel for ``depth`` voxels up (axis 0 increasing) and down, the image's
    end counting as held."""
    up, down = mask.copy(), mask.copy()
    for d in range(1, depth):
        up[:-d] &= mask[d:]
        down[d:] &= mask[:-d]
    return up, down
