"""Blood versus bone on a contrast-enhanced CT (working grid, oriented S, P, L).

The pool starts from the blood cores (ct_phase: thick, homogeneous, not enclosed by brighter tissue) and takes,
within two working voxels, the voxels between the lumen's edge and the core's HU plus a margin (4 times the
noise, at least 60 HU): brighter voxels are cortex or calcified plaque, never blood. The edge is half-way from
the core's surroundings (the median of the darker voxels 2-3 voxels around it: fat, or the liver around the
portal vein) to its HU. Each pool voxel keeps the edge and the upper limit of the core it grew from, for the
full-resolution decision. Pool parts whose core is at least half-way from soft tissue to the phase's blood HU
are the blood pool shown ("contrast-enhanced vessels and heart chambers"); dimmer cores (enhanced spleen in the
arterial phase) only stay out of the skeleton.

The skeleton is then found as on a native CT, outside the pool; afterwards, near the blood pool, what is not
bone is dropped (``drop_plaque``): pieces under ``PLAQUE_ML`` that touch it or that lie on it for the most part
(calcified plaque, inflow jets of undiluted contrast, a lumen's bright rim), and the bone voxels next to it that
are not next to bone farther from it (plaque on the aortic wall, up to the spine it lies on).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .ct_grid import component_sizes
from .ct_phase import enclosed

RIM_STEPS, BRANCH_STEPS = 2, 0
PLAQUE_ML = 0.5
_CUBE = np.ones((3, 3, 3), bool)


@dataclass
class Pool:
    """``mask``: every voxel grown from a blood core; ``vessels``: those shown as blood pool; ``low``, ``high``:
    per pool voxel, the HU range of its lumen (0 elsewhere)."""

    mask: np.ndarray
    vessels: np.ndarray
    low: np.ndarray
    high: np.ndarray


def blood_pool(hu, body, phase) -> Pool:
    """The pool grown from ``phase.cores`` (see the module docstring)."""
    cores = phase.cores
    mask = cores > 0
    low, high = np.zeros(hu.shape, np.float32), np.zeros(hu.shape, np.float32)
    if not mask.any():
        return Pool(mask, mask.copy(), low, high)
    count = int(cores.max())
    levels, noise = phase.levels, phase.noise_hu
    margin = max(4.0 * noise, 60.0)
    box = _box(mask, RIM_STEPS + 3)
    c, h, b = cores[box], hu[box], body[box]
    ring = _dilate_labels(c, 3)
    ring[_dilate_labels(c, 1) > 0] = 0
    darker = (ring > 0) & b & (h < levels[ring] - max(3.0 * noise, 30.0))
    background = np.full(count + 1, phase.soft_tissue_hu, np.float32)
    present = np.unique(ring[darker])
    present = present[present > 0]
    if len(present):
        background[present] = ndi.median(h, np.where(darker, ring, 0), present)
    edge = (background + 0.5 * (levels - background)).astype(np.float32)
    edge[0] = 0.0
    top = (levels + margin).astype(np.float32)
    top[0] = 0.0
    owner = c.copy()  # the core each pool voxel grew from
    spacing = np.asarray(phase.spacing, float)
    smooth = ndi.gaussian_filter(h, 3.0 / spacing)  # for the shape of branches: 3 mm
    for step in range(RIM_STEPS + BRANCH_STEPS):
        near = _dilate_labels(owner, 1, by=levels)
        accept = (near > 0) & (owner == 0) & b & (h >= edge[near]) & (h <= top[near])
        if step >= RIM_STEPS:  # beyond the lumen's rim: only along tubes, not along plates, and not into marrow
            points = np.argwhere(accept)
            if not len(points):
                break
            values = h[accept]
            ok = ~plate_like(smooth, points, spacing)
            low = phase.soft_tissue_hu + 0.25 * (values - phase.soft_tissue_hu)
            ok &= enclosed(h, points, low, values + max(3.0 * noise, 30.0) + 30.0, spacing) < 0.5
            accept[tuple(points[~ok].T)] = False
        owner[accept] = near[accept]
    full = np.zeros(cores.shape, np.int32)
    full[box] = owner
    mask = full > 0
    low, high = edge[full], top[full]
    soft = phase.soft_tissue_hu
    bright = levels >= soft + 0.5 * ((phase.blood_hu or 0.0) - soft)
    bright[0] = False
    return Pool(mask, bright[full], low, high)


def plate_like(smooth, points, spacing) -> np.ndarray:
    """Whether ``smooth`` is a bright plate at each of ``points`` (n, 3): the Hessian's most negative eigenvalue
    is strongly negative and the next one less than a third of it (a tube or a blob has two or three)."""
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
    result[inside] = (eigen[:, 0] < 0) & (eigen[:, 1] > eigen[:, 0] / 3.0)
    return result


def drop_plaque(bone, vessels, voxel_ml: float) -> tuple[np.ndarray, float]:
    """``bone`` without what is not bone near the blood pool ``vessels``; returns it and the volume dropped (ml)."""
    if not vessels.any() or not bone.any():
        return bone, 0.0
    beside = ndi.binary_dilation(vessels, _CUBE)
    components, _ = ndi.label(bone, _CUBE)
    sizes = component_sizes(components)
    on_pool = np.bincount(components[beside & bone], minlength=len(sizes))
    drop = (on_pool > 0) & ((sizes * voxel_ml < PLAQUE_ML) | (on_pool >= 0.5 * sizes))
    drop[0] = False
    kept = bone & ~drop[components]
    contested = kept & beside
    kept &= ~contested | ndi.binary_dilation(kept & ~contested, _CUBE)
    return kept, float(np.count_nonzero(bone & ~kept) * voxel_ml)


def _dilate_labels(labels, steps: int, by=None) -> np.ndarray:
    """Label map grown by ``steps`` voxels (26-neighbourhood) into unlabelled voxels; where several labels meet,
    the one with the highest ``by`` value (default: the highest label)."""
    grown = labels.copy()
    key = None if by is None else np.asarray(by, np.float32)
    for _ in range(steps):
        if key is None:
            candidate = ndi.grey_dilation(grown, footprint=_CUBE)
        else:  # the neighbour with the highest key: dilate the key, then find which label carries it
            rank = np.argsort(np.argsort(key)).astype(np.int32)  # label -> its rank by key
            order = np.argsort(key).astype(np.int32)  # rank -> label
            candidate = order[ndi.grey_dilation(np.where(grown > 0, rank[grown], -1), footprint=_CUBE).clip(0)]
            candidate[ndi.grey_dilation(grown, footprint=_CUBE) == 0] = 0
        grown = np.where(grown > 0, grown, candidate)
    return grown


def _box(mask, margin: int) -> tuple[slice, ...]:
    """The bounding box of ``mask`` grown by ``margin`` voxels (a view into the arrays, so edits go through)."""
    where = (
        np.nonzero(mask.any(axis=(1, 2)))[0],
        np.nonzero(mask.any(axis=(0, 2)))[0],
        np.nonzero(mask.any(axis=(0, 1)))[0],
    )
    return tuple(slice(max(0, int(w[0]) - margin), int(w[-1]) + margin + 1) for w in where)
