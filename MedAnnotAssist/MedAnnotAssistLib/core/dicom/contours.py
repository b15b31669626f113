"""Slice masks to planar contours and back, exactly at pixel centres.

Convention (as Slicer and most treatment planning systems read RTSTRUCT): every closed contour on a slice
toggles inside/outside, i.e. the region is filled with the even-odd (XOR) rule. An island is one contour, a
hole in it is another contour, an island inside the hole a third one; winding direction carries no meaning.

Contours are traced with marching squares at level 0.5 on the zero-padded mask, so every vertex lies halfway
between an inside and an outside pixel centre: no pixel centre is ever on a contour, and filling the
contours with the even-odd rule at pixel centres gives back the mask voxel for voxel.
"""

from __future__ import annotations

import numpy as np


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    """The closed polygon without vertices on the straight line between their neighbours (exact, no
    simplification: marching squares puts one vertex on every pixel edge it crosses)."""
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - before[:, 0]) * (after[:, 1] - points[:, 1]) - (points[:, 1] - before[:, 1]) * (
        after[:, 0] - points[:, 0]
    )
    kept = points[np.abs(cross) > 1e-9]
    return kept if len(kept) >= 3 else points


def mask_to_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours of a 2-D mask as (n, 2) arrays of (row, column) pixel coordinates, the last vertex
    not repeating the first; outer boundaries and hole boundaries alike (even-odd convention)."""
    from skimage.measure import find_contours

    mask = np.asarray(mask, bool)
    if not mask.any():
        return []
    # crop to the content (with a one-pixel frame) so large empty slices cost nothing
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, left = rows[0], columns[0]
    cropped = mask[top : rows[-1] + 1, left : columns[-1] + 1]
    padded = np.pad(cropped, 1).astype(np.float32)
    contours = []
    for contour in find_contours(padded, 0.5):
        # padding closes every contour: the first and last points coincide
        points = contour[:-1] if np.allclose(contour[0], contour[-1]) else contour
        if len(points) >= 3:
            contours.append(_drop_collinear(points) + np.array([top - 1, left - 1]))
    return contours


def contours_to_mask(contours: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Fill (row, column) polygons at pixel centres with the even-odd rule: a pixel centre is inside when a
    ray from it towards -column crosses the contours an odd number of times (each contour toggles)."""
    height, width = shape
    rows, columns = [], []
    for contour in contours:
        if len(contour) < 3:
            continue
        r0, c0 = contour[:, 0], contour[:, 1]
        r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
        # an edge crosses the pixel-centre rows y with min(r0, r1) <= y < max(r0, r1); horizontal edges none
        low, high = np.ceil(np.minimum(r0, r1)).astype(int), np.ceil(np.maximum(r0, r1)).astype(int)
        counts = high - low
        edge = np.repeat(np.arange(len(r0)), counts)
        y = low[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts))
        x = c0[edge] + (y - r0[edge]) * (c1[edge] - c0[edge]) / (r1[edge] - r0[edge])
        rows.append(y)
        columns.append(x)
    mask = np.zeros(shape, bool)
    if not rows:
        return mask
    y, x = np.concatenate(rows), np.concatenate(columns)
    keep = (y >= 0) & (y < height)
    y, x = y[keep], x[keep]
    if y.size == 0:
        return mask
    # a crossing at x toggles every pixel centre j >= x on its row; count toggles with a cumulative sum
    top, bottom = int(y.min()), int(y.max()) + 1
    start = np.clip(np.ceil(x), 0, width).astype(int)
    toggles = np.bincount((y - top) * (width + 1) + start, minlength=(bottom - top) * (width + 1))
    inside = np.cumsum(toggles.reshape(bottom - top, width + 1), axis=1)[:, :width] % 2 == 1
    mask[top:bottom] = inside
    return mask


def index_to_patient(points_kji: np.ndarray, origin, spacing, direction) -> np.ndarray:
    """(k, j, i) voxel coordinates to LPS patient coordinates in mm (the DICOM patient system)."""
    matrix = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)
    ijk = np.asarray(points_kji, float)[:, ::-1]
    return ijk @ matrix.T + np.asarray(origin, float)


def patient_to_index(points_lps: np.ndarray, origin, spacing, direction) -> np.ndarray:
    """LPS patient coordinates in mm to continuous (k, j, i) voxel coordinates."""
    matrix = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)
    ijk = np.linalg.solve(matrix, (np.asarray(points_lps, float) - np.asarray(origin, float)).T).T
    return ijk[:, ::-1]
