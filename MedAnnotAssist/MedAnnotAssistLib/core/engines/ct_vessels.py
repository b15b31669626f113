"""Blood versus bone on a contrast-enhanced CT (working grid, oriented S, P, L).

The pool starts from the blood cores (ct_phase: thick, homogeneous, not enclosed by brighter tissue):

- rim: two steps (26-neighbourhood) into voxels between the lumen's edge and the core's HU plus a margin (4
  times the noise, at least 60 HU): brighter voxels are cortex or calcified plaque, never blood. The edge is
  half-way from the core's surroundings (the median of the darker voxels 2-3 voxels around it: fat, or the
  liver around the portal vein) to its HU.
- branches: up to eight more steps from cores of >= 1 ml, along the vessels leaving them: voxels of the lumen's
  HU (at most 3 times the noise or 30 % of the contrast below it) that touch nothing brighter than blood, are
  shaped as a tube or a blob by the Hessian of the image smoothed at 3 mm (a plate, such as cortex, is not), are
  not enclosed by brighter tissue, and, on a finer image, have no marrow texture.

Each pool voxel keeps the HU range of the core it grew from, for the full-resolution decision. Pool parts whose
core is at least half-way from soft tissue to the phase's blood HU are shown as the blood pool ("contrast-
enhanced vessels and heart chambers"); dimmer ones (the spleen in the arterial phase) only stay out of the bone.

The skeleton is then found as on a native CT, outside the pool, and what is not bone is dropped:

- near the blood pool (``drop_plaque``): pieces under ``PLAQUE_ML`` within ``PLAQUE_REACH_MM`` of it (as many
  working voxels, 26-neighbourhood: calcified plaque, coronary calcium on the heart), pieces that lie on it for
  the most part (inflow jets of undiluted contrast, a lumen's bright rim), and the voxels next to it that are
  not next to bone farther from it (plaque on the aortic wall, up to the spine it lies on);
- anywhere (``drop_enhanced``): components without a voxel above ``ORGAN_PEAK`` (the kidney's cortex in the
  arterial phase).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from . import ct_phase
from .ct_grid import component_sizes, dilate_labels, label_medians
from .ct_phase import enclosed

RIM_STEPS, BRANCH_STEPS = 2, 8
BRANCH_TEXTURE = 2.0  # most spread of the original voxels of a branch's working voxel, in soft tissue's units
ORGAN_PEAK = 250.0  # bone on a contrast CT has voxels above this (cortex, on any grid up to 3 mm)
SOURCE_ML = 1.0  # branches grow from cores of at least this volume (smaller ones may be pockets of marrow)
PLAQUE_ML, PLAQUE_REACH_MM = 0.5, 12.0
_CUBE = np.ones((3, 3, 3), bool)


@dataclass
class Pool:
    """``mask``: every voxel grown from a blood core; ``vessels``: those shown as blood pool; ``low``, ``high``:
    per pool voxel, the HU range of its lumen (0 elsewhere)."""

    mask: np.ndarray
    vessels: np.ndarray
    low: np.ndarray
    high: np.ndarray


def contrast_constants() -> dict:
    """The fixed limits of the contrast path (ct_phase, ct_vessels), for the provenance."""
    return {
        "core_hu": list(ct_phase.CORE_HU),
        "core_depth_mm": ct_phase.CORE_DEPTH_MM,
        "core_ml": ct_phase.MIN_CORE_ML,
        "phase_core_ml": ct_phase.PHASE_CORE_ML,
        "phase_enhancement_hu": [ct_phase.CONTRAST_E, ct_phase.ARTERIAL_E],
        "texture": [ct_phase.COARSE_TEXTURE, ct_phase.FINE_TEXTURE, ct_phase.COARSE_TEXTURE_FINE],
        "rim_steps": RIM_STEPS,
        "branch_steps": BRANCH_STEPS,
        "plaque_ml": PLAQUE_ML,
        "plaque_reach_mm": PLAQUE_REACH_MM,
        "organ_peak_hu": ORGAN_PEAK,
    }


def blood_pool(hu, body, phase, fine=None) -> Pool:
    """The pool grown from ``phase.cores`` (see the module docstring); ``fine``: the original voxels
    (FineBlocks), whose texture keeps branches out of marrow."""
    cores = phase.cores
    mask = cores > 0
    if not mask.any():
        return Pool(mask, mask.copy(), np.zeros(hu.shape, np.float32), np.zeros(hu.shape, np.float32))
    count = len(phase.levels) - 1
    levels, noise = phase.levels, phase.noise_hu
    margin = max(4.0 * noise, 60.0)
    box = _box(mask, RIM_STEPS + BRANCH_STEPS + 3)
    c, h, b = cores[box], hu[box], body[box]
    ring = dilate_labels(c, 3)
    ring[dilate_labels(c, 1) > 0] = 0
    darker = (ring > 0) & b & (h < levels[ring] - max(3.0 * noise, 30.0))
    background = np.full(count + 1, phase.soft_tissue_hu, np.float32)
    present = np.unique(ring[darker])
    present = present[present > 0]
    if len(present):
        background[present] = label_medians(h, np.where(darker, ring, 0), count)[present]
    edge = (background + 0.5 * (levels - background)).astype(np.float32)
    edge[0] = 0.0
    top = (levels + margin).astype(np.float32)
    top[0] = 0.0
    owner = c.copy()  # the core each pool voxel grew from
    for _ in range(RIM_STEPS):
        near = dilate_labels(owner, 1, by=levels)
        accept = (near > 0) & (owner == 0) & b & (h >= edge[near]) & (h <= top[near])
        owner[accept] = near[accept]
    soft = phase.soft_tissue_hu
    shown = levels >= soft + 0.5 * ((phase.blood_hu or 0.0) - soft)  # vessels, not enhanced organs
    shown[0] = False
    source = shown & (
        np.bincount(cores.ravel(), minlength=count + 1) * float(np.prod(phase.spacing)) / 1000.0 >= SOURCE_ML
    )
    lumen = np.maximum(edge, levels - np.maximum(3.0 * noise, 0.3 * (levels - background)))
    spacing = np.asarray(phase.spacing, float)
    smooth = ndi.gaussian_filter(h, 3.0 / spacing)  # the shape of branches at 3 mm
    brightest = ndi.maximum_filter(h, footprint=_CUBE)  # a branch never touches what is brighter than blood
    for _ in range(BRANCH_STEPS):  # along tubes of lumen-like HU, not along plates, not into marrow
        near = dilate_labels(owner, 1, by=levels)
        accept = source[near] & (owner == 0) & b & (h >= lumen[near]) & (brightest <= top[near])
        points = np.argwhere(accept)
        if not len(points):
            break
        values = h[accept]
        ok = tube_or_blob(smooth, points, spacing)
        darker = soft + 0.25 * (values - soft)
        ok &= enclosed(h, points, darker, values + max(3.0 * noise, 30.0) + 30.0, spacing) < 0.5
        if fine is not None and phase.fine_noise is not None:
            offset = np.array([s.start for s in box])
            ok &= fine.spread(points + offset) <= BRANCH_TEXTURE * phase.fine_noise
        accept[tuple(points[~ok].T)] = False
        owner[accept] = near[accept]
    full = np.zeros(cores.shape, np.int32)
    full[box] = owner
    return Pool(full > 0, shown[full], edge[full], top[full])


def tube_or_blob(smooth, points, spacing) -> np.ndarray:
    """Whether ``smooth`` is a bright tube or blob at each of ``points`` (n, 3): the Hessian's two most negative
    eigenvalues are both negative, the second at least a third of the first (a plate, such as cortex, has one)."""
    inside = np.all((points > 0) & (points < np.array(smooth.shape) - 1), axis=1)
    result = np.zeros(len(points), bool)
    p = points[inside]
    if not len(p):
        return result
    hessian = np.empty((len(p), 3, 3), np.float32)
    for a in range(3):
        for b in range(a, 3):
            if a == b:
                up, down = p.copy(), p.copy()
                up[:, a] += 1
                down[:, a] -= 1
                value = smooth[tuple(up.T)] - 2 * smooth[tuple(p.T)] + smooth[tuple(down.T)]
                value /= spacing[a] ** 2
            else:
                value = 0.0
                for sa, sb, sign in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)):
                    q = p.copy()
                    q[:, a] += sa
                    q[:, b] += sb
                    value = value + sign * smooth[tuple(q.T)]
                value = value / (4 * spacing[a] * spacing[b])
            hessian[:, a, b] = hessian[:, b, a] = value
    eigen = np.linalg.eigvalsh(hessian)  # ascending: eigen[:, 0] is the most negative
    result[inside] = (eigen[:, 0] < 0) & (eigen[:, 1] <= eigen[:, 0] / 3.0)
    return result


def drop_plaque(bone, vessels, spacing) -> tuple[np.ndarray, float]:
    """``bone`` without what is not bone near the blood pool ``vessels``; returns it and the volume dropped (ml)."""
    if not vessels.any() or not bone.any():
        return bone, 0.0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    beside = ndi.binary_dilation(vessels, _CUBE)
    components, _ = ndi.label(bone, _CUBE)
    sizes = component_sizes(components)
    on_pool = np.bincount(components[beside & bone], minlength=len(sizes))
    steps = max(1, int(round(PLAQUE_REACH_MM / float(np.mean(spacing)))))
    box = _box(vessels, steps + 1)
    near = np.zeros(bone.shape, bool)  # within reach of the pool: coronary calcium lies on the heart
    near[box] = ndi.binary_dilation(vessels[box], _CUBE, iterations=steps)
    close = (np.bincount(components[near & bone], minlength=len(sizes)) > 0) & (sizes * voxel_ml < PLAQUE_ML)
    drop = close | (on_pool >= 0.5 * sizes)
    drop[0] = False
    kept = bone & ~drop[components]
    contested = kept & beside
    kept &= ~contested | ndi.binary_dilation(kept & ~contested, _CUBE)
    return kept, float(np.count_nonzero(bone & ~kept) * voxel_ml)


def drop_enhanced(bone, hu, voxel_ml: float) -> tuple[np.ndarray, float]:
    """``bone`` without the components whose 99th percentile HU is at most ``ORGAN_PEAK``: enhanced parenchyma
    (the kidney's cortex in the arterial phase) or a vessel apart from the pool; bone has brighter cortex."""
    components, count = ndi.label(bone, _CUBE)
    if not count:
        return bone, 0.0
    peaks = np.zeros(count + 1)
    for value, where in enumerate(ndi.find_objects(components), start=1):
        peaks[value] = np.percentile(hu[where][components[where] == value], 99)
    dim = peaks <= ORGAN_PEAK
    dim[0] = False
    return bone & ~dim[components], float(np.count_nonzero(dim[components]) * voxel_ml)


def _box(mask, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (a view into the arrays, so edits go through)."""
    where = (
        np.nonzero(mask.any(axis=(1, 2)))[0],
        np.nonzero(mask.any(axis=(0, 2)))[0],
        np.nonzero(mask.any(axis=(0, 1)))[0],
    )
    return tuple(slice(max(0, int(w[0]) - margin), int(w[-1]) + margin + 1) for w in where)
