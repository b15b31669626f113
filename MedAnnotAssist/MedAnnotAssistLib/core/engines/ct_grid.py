"""Grid and morphology helpers of the CT engine: orientation to (S, P, L) arrays, flat footprints, slice-wise hole
filling and hulls, component sizes, trilinear occupancy of working-grid masks at the original voxels."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage as ndi

CROSS = ndi.generate_binary_structure(3, 1)
FLAT = np.zeros((3, 3, 3), bool)
FLAT[1] = ndi.generate_binary_structure(2, 1)
CUBE = np.ones((3, 3, 3), bool)


def occupancy(padded, k, j, i, factors) -> np.ndarray:
    """Trilinear interpolation of the working-grid ``padded`` (padded by one) at the original voxels of blocks
    (k, j, i): an array (n, fk, fj, fi)."""
    cube = np.stack([padded[k + a, j + b, i + c] for a in range(3) for b in range(3) for c in range(3)], axis=1)
    cube = cube.reshape(len(k), 3, 3, 3)
    weights = []
    for f in factors:  # (f, 3): weights of the previous, same and next working voxel for each offset
        t = (np.arange(f) + 0.5) / f - 0.5
        weights.append(np.stack([np.maximum(-t, 0), 1 - np.abs(t), np.maximum(t, 0)], axis=1).astype(np.float32))
    out = cube @ weights[2].T  # (n, 3, 3, fi)
    out = np.swapaxes(np.swapaxes(out, 2, 3) @ weights[1].T, 2, 3)  # (n, 3, fj, fi)
    return np.moveaxis(np.moveaxis(out, 1, 3) @ weights[0].T, 3, 1)  # (n, fk, fj, fi)


def orientation(direction: np.ndarray) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Array axis (k, j, i) feeding each oriented axis (S, P, L), and whether it runs the other way."""
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(direction[p[c], c]) for c in range(3)))
    physical = {best[c]: c for c in range(3)}  # physical axis (x, y, z) -> index axis (i, j, k)
    order = tuple(2 - physical[2 - a] for a in range(3))  # oriented axis a is physical axis 2 - a
    flips = tuple(direction[2 - a, 2 - order[a]] < 0 for a in range(3))
    return order, flips


def to_lps(array, order, flips):
    array = array.transpose(order)
    return np.ascontiguousarray(array[tuple(slice(None, None, -1) if f else slice(None) for f in flips)])


def from_lps(array, order, flips):
    array = array[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    return np.ascontiguousarray(array.transpose(np.argsort(order)))


def disk(radius_mm: float, spacing) -> np.ndarray:
    """A flat (in-plane) elliptic footprint of ``radius_mm`` for (z, y, x) spacing."""
    rj, ri = (max(1, int(round(radius_mm / s))) for s in spacing[1:])
    y, x = np.ogrid[-rj : rj + 1, -ri : ri + 1]
    return ((y * spacing[1]) ** 2 + (x * spacing[2]) ** 2 <= radius_mm**2 + 1e-6)[None]


def padded(operation, mask, footprint):
    """``operation(mask, footprint)`` with the image border padded, so that closings do not erode at it."""
    pad = [s // 2 for s in footprint.shape]
    crop = tuple(slice(p, p + n) for p, n in zip(pad, mask.shape, strict=True))
    return operation(np.pad(mask, [(p, p) for p in pad]), footprint)[crop]


def fill_slices(mask: np.ndarray, max_voxels: int | None = None) -> np.ndarray:
    """Fill the holes of every axial slice (axis 0) of ``mask`` at once (only those up to ``max_voxels``)."""
    background, _ = ndi.label(~mask, FLAT)
    edge = np.unique(np.concatenate([background[:, [0, -1], :].ravel(), background[:, :, [0, -1]].ravel()]))
    hole = np.ones(background.max() + 1, bool)
    if max_voxels is not None:
        hole &= np.bincount(background.ravel(), minlength=len(hole)) <= max_voxels
    hole[edge] = False
    hole[0] = False
    return mask | hole[background]


def convex_hull_slices(mask: np.ndarray, spacing, directions: int = 32) -> np.ndarray:
    """Per axial slice, the polygon of ``directions`` half-planes around ``mask`` (about its convex hull)."""
    y, x = np.ogrid[: mask.shape[1], : mask.shape[2]]
    y, x = y * float(spacing[1]), x * float(spacing[2])
    hull = mask.any(axis=(1, 2))[:, None, None] & np.ones(mask.shape, bool)
    for angle in np.linspace(0, np.pi * 2, directions, endpoint=False):
        projection = (np.cos(angle) * x + np.sin(angle) * y).astype(np.float32)
        reach = np.where(mask, projection, -np.inf).max(axis=(1, 2))
        hull &= projection[None] <= reach[:, None, None] + 1e-3
    return hull


def component_sizes(labels):
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return sizes


class FineBlocks:
    """The original voxels behind working voxels given by their (S, P, L) index: the working grid is the block
    means of ``factors`` (k, j, i) original voxels, re-oriented by ``order`` and ``flips`` (see ``to_lps``)."""

    def __init__(self, original, factors, order, flips, shape_lps):
        self.factors = tuple(int(f) for f in factors)
        self.order, self.flips = tuple(order), tuple(flips)
        self.shape_lps = tuple(shape_lps)
        counts = [shape_lps[list(order).index(axis)] for axis in range(3)]  # working voxels per original axis
        fk, fj, fi = self.factors
        ck, cj, ci = counts
        self.view = original[: ck * fk, : cj * fj, : ci * fi].reshape(ck, fk, cj, fj, ci, fi)

    @property
    def finer(self) -> bool:
        return max(self.factors) > 1

    def values(self, points) -> np.ndarray:
        """(n, fk * fj * fi) float32: the original HU of each working voxel's block; ``points`` (n, 3) in LPS."""
        points = np.asarray(points)
        b = [
            np.where(f, n - 1 - points[:, a], points[:, a])
            for a, (f, n) in enumerate(zip(self.flips, self.shape_lps, strict=True))
        ]
        index = [None, None, None]
        for a, axis in enumerate(self.order):
            index[axis] = b[a]
        block = self.view[index[0], :, index[1], :, index[2], :]
        return block.reshape(len(points), -1).astype(np.float32)

    def spread(self, points, chunk: int = 50_000) -> np.ndarray:
        """Standard deviation of the original HU within each working voxel of ``points``."""
        points = np.asarray(points)
        out = np.empty(len(points), np.float32)
        for start in range(0, len(points), chunk):
            out[start : start + chunk] = self.values(points[start : start + chunk]).std(axis=1)
        return out


def dilate_labels(labels, steps: int, by=None) -> np.ndarray:
    """Label map grown by ``steps`` voxels (26-neighbourhood) into unlabelled voxels; where several labels meet,
    the one with the highest ``by`` value (default: the highest label)."""
    grown = labels.copy()
    key = None if by is None else np.asarray(by, np.float32)
    for _ in range(steps):
        if key is None:
            candidate = ndi.grey_dilation(grown, footprint=CUBE)
        else:  # the neighbour with the highest key: dilate the key, then find which label carries it
            rank = np.argsort(np.argsort(key)).astype(np.int32)  # label -> its rank by key
            order = np.argsort(key).astype(np.int32)  # rank -> label
            candidate = order[ndi.grey_dilation(np.where(grown > 0, rank[grown], -1), footprint=CUBE).clip(0)]
            candidate[ndi.grey_dilation(grown, footprint=CUBE) == 0] = 0
        grown = np.where(grown > 0, grown, candidate)
    return grown


def label_medians(values, labels, count: int) -> np.ndarray:
    """The median of ``values`` over each label 1..``count`` of ``labels`` (index 0 and absent labels: 0); only
    the labelled voxels are sorted, unlike ``ndimage.median``, which sorts the whole array."""
    where = labels > 0
    v, lab = values[where], labels[where]
    order = np.lexsort((v, lab))
    v, lab = v[order], lab[order]
    counts = np.bincount(lab, minlength=count + 1)[: count + 1]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.zeros(count + 1, np.float64)
    present = counts > 0
    low = starts[present] + (counts[present] - 1) // 2
    high = starts[present] + counts[present] // 2
    out[present] = (v[low].astype(np.float64) + v[high]) / 2.0
    out[0] = 0.0
    return out
