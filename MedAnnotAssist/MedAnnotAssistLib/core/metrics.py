"""Agreement between readers' masks: overlap and surface-distance metrics, all distances in mm.

Every pair of readers of one structure is compared. The work is done once per reader, not once per pair:
the masks are cropped to the union bounding box of all readers (plus one voxel), each reader's surface
and its distance transform are computed once, and each pair only looks values up.

Conventions (docs/consensus.md has the full story):

* ``convention="surfels"`` (default) is DeepMind's ``surface-distance`` (Nikolov et al. 2021): surface
  elements sit on the corners of the voxel grid (2x2x2 neighbourhood codes), each weighted by its area
  in mm² (length in mm for 2-D masks); HD95 is the area-weighted 95th percentile of each direction, the
  larger of the two; surface Dice at tolerance τ is the area of both surfaces within τ of the other over
  the total area. We use their published surfel-area table so the areas are theirs to the bit. ASSD is
  the area-weighted mean over both surfaces; their two directed means are reported as ``asd_ab_mm`` and
  ``asd_ba_mm``.
* ``convention="voxels"`` is SimpleITK's ``HausdorffDistanceImageFilter``: every foreground voxel centre
  of one mask against the nearest foreground voxel centre of the other (0 inside); ``hd_mm`` is the
  Hausdorff distance, ``assd_mm`` SimpleITK's average Hausdorff distance (mean of the two directed
  means), ``hd95_mm`` the larger directed 95th percentile (numpy's linear interpolation). Surface Dice
  stays surfel-based.

Empty masks (``empty="defined"``, the default): both empty means the readers agree that the structure is
absent: Dice = Jaccard = surface Dice = 1, distances 0. One empty: Dice = Jaccard = surface Dice = 0 and
distances infinite (``null`` in JSON). ``empty="deepmind"`` gives what ``surface-distance`` gives
instead (NaN for 0/0, infinite distances).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import ndimage

CONVENTIONS = ("surfels", "voxels")
EDT_MIN_VOXELS = 150_000  # below this scipy's transform beats edt's thread start-up
TOLERANCE_SLACK = 1e-6  # relative: float32 distance maps must not push a distance equal to τ past it
EMPTY_POLICIES = ("defined", "deepmind")


@dataclass(frozen=True)
class PairMetrics:
    """Agreement of readers ``a`` and ``b`` on one structure."""

    a: str
    b: str
    dice: float
    jaccard: float
    volume_a_ml: float
    volume_b_ml: float
    volume_diff_ml: float  # b - a
    volume_similarity: float  # 2 (a - b) / (a + b), SimpleITK's definition
    hd_mm: float
    hd95_mm: float
    assd_mm: float
    asd_ab_mm: float  # mean distance from a's surface to b's
    asd_ba_mm: float
    surface_dice: float
    tolerance_mm: float
    empty: str | None = None  # None, "a", "b" or "both"

    def as_dict(self) -> dict:
        return {key: _json_number(value) for key, value in asdict(self).items()}


def _json_number(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every nonzero voxel, or None for an empty mask."""
    box = []
    for axis in range(mask.ndim):
        others = tuple(i for i in range(mask.ndim) if i != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def union_box(boxes: Sequence[tuple[slice, ...] | None], shape: Sequence[int], margin: int = 1):
    """Union of bounding boxes, grown by ``margin`` voxels and clipped to ``shape``; None if all are None."""
    boxes = [box for box in boxes if box is not None]
    if not boxes:
        return None
    return tuple(
        slice(
            max(0, min(box[axis].start for box in boxes) - margin),
            min(size, max(box[axis].stop for box in boxes) + margin),
        )
        for axis, size in enumerate(shape)
    )


@functools.lru_cache(maxsize=16)
def _area_table(spacing: tuple[float, ...]) -> np.ndarray:
    from surface_distance import lookup_tables

    if len(spacing) == 3:
        return lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    return lookup_tables.create_table_neighbour_code_to_contour_length(spacing)


class _Surface:
    """One reader's surface elements on the corner grid of the shared crop (DeepMind's neighbour codes)."""

    def __init__(self, mask: np.ndarray, area_table: np.ndarray):
        padded = np.pad(mask.astype(np.uint8, copy=False), 1)
        corner_shape = tuple(size + 1 for size in mask.shape)
        code = np.zeros(corner_shape, np.uint8)
        # Corner i sits between voxels i-1 and i on each axis. The neighbour at offset (0, 0, 0) is the
        # highest bit, (1, 1, 1) the lowest, as in DeepMind's ENCODE_NEIGHBOURHOOD kernels.
        bits = range(2**mask.ndim - 1, -1, -1)
        for bit, offset in zip(bits, np.ndindex(*([2] * mask.ndim)), strict=True):
            window = tuple(slice(o, o + size) for o, size in zip(offset, corner_shape, strict=True))
            code |= padded[window] << np.uint8(bit)
        full = 2 ** (2**mask.ndim) - 1
        self.borders = (code != 0) & (code != full)
        self.areas = area_table[code[self.borders]]
        self.total_area = float(self.areas.sum())
        self.empty = self.areas.size == 0

    def distance_map(self, spacing) -> np.ndarray:
        """Distance in mm from every corner of the crop to the nearest surface element of this reader."""
        return distance_to(self.borders, spacing)


def distance_to(target: np.ndarray, spacing) -> np.ndarray:
    """Euclidean distance in mm from every voxel to the nearest True voxel of ``target`` (0 on it).

    Uses the ``edt`` package (exact, multi-threaded, float32) when installed, else scipy's exact
    float64 transform. float32 distances differ from float64 ones by less than 1e-5 mm on these grids;
    a distance equal to the surface Dice tolerance is kept within it by ``TOLERANCE_SLACK``.
    """
    try:
        import edt
    except ImportError:
        edt = None
    if edt is None or target.size < EDT_MIN_VOXELS:  # scipy is quicker on small crops
        return ndimage.distance_transform_edt(~target, sampling=spacing)
    return edt.edt(
        np.ascontiguousarray(~target), anisotropy=tuple(spacing), black_border=False, parallel=os.cpu_count() or 1
    )


def _weighted_percentile(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    """DeepMind's robust Hausdorff for one direction: the distance at which the sorted cumulative area
    first reaches ``percent``."""
    order = np.argsort(distances, kind="stable")
    cumulative = np.cumsum(areas[order]) / areas.sum()
    index = min(int(np.searchsorted(cumulative, percent / 100.0)), distances.size - 1)
    return float(distances[order][index])


class _Reader:
    def __init__(self, mask: np.ndarray, area_table: np.ndarray):
        self.mask = mask
        self.voxels = int(np.count_nonzero(mask))
        self.surface = _Surface(mask, area_table)


def _check_inputs(masks, spacing, convention, empty) -> list[np.ndarray]:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {', '.join(CONVENTIONS)}, got {convention!r}")
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty: expected one of {', '.join(EMPTY_POLICIES)}, got {empty!r}")
    masks = [np.asarray(mask).astype(bool, copy=False) for mask in masks]
    if not masks:
        raise ValueError("masks: expected at least one mask")
    shape = masks[0].shape
    if len(shape) not in (2, 3):
        raise ValueError(f"masks: expected 2-D or 3-D arrays, got {len(shape)}-D")
    for index, mask in enumerate(masks):
        if mask.shape != shape:
            raise ValueError(f"masks[{index}]: shape {mask.shape} differs from masks[0] {shape}")
    if len(spacing) != len(shape) or any(not (float(s) > 0) for s in spacing):
        raise ValueError(f"spacing: expected {len(shape)} positive values in array axis order, got {tuple(spacing)}")
    return masks


def _empty_pair(a, b, ra, rb, unit, tolerance_mm, empty) -> PairMetrics:
    va, vb = ra.voxels * unit, rb.voxels * unit
    which = "both" if ra.surface.empty and rb.surface.empty else ("a" if ra.surface.empty else "b")
    inf, nan = math.inf, math.nan
    if which == "both":
        if empty == "defined":
            return PairMetrics(a, b, 1.0, 1.0, va, vb, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, tolerance_mm, which)
        return PairMetrics(a, b, nan, nan, va, vb, 0.0, nan, inf, inf, nan, nan, nan, nan, tolerance_mm, which)
    similarity = 2 * (va - vb) / (va + vb)
    if empty == "defined":
        asd_ab = asd_ba = inf
    else:  # their directed mean from the empty side is 0/0
        asd_ab, asd_ba = (nan, inf) if which == "a" else (inf, nan)
    return PairMetrics(
        a, b, 0.0, 0.0, va, vb, vb - va, similarity, inf, inf, inf, asd_ab, asd_ba, 0.0, tolerance_mm, which
    )


def pairwise_metrics(
    masks: Sequence[np.ndarray],
    spacing: Sequence[float],
    names: Sequence[str] | None = None,
    tolerance_mm: float = 2.0,
    percent: float = 95.0,
    convention: str = "surfels",
    empty: str = "defined",
) -> list[PairMetrics]:
    """Metrics for every pair (i < j) of readers' masks of one structure.

    ``masks`` are boolean arrays of one shape on one grid (array axis order, e.g. k, j, i) and
    ``spacing`` the voxel size in mm in the same order. Returns pairs in the order (0, 1), (0, 2), ...
    """
    masks = _check_inputs(masks, spacing, convention, empty)
    names = list(names) if names is not None else [f"reader{i + 1}" for i in range(len(masks))]
    if len(names) != len(masks):
        raise ValueError(f"names: {len(names)} names for {len(masks)} masks")
    spacing = tuple(float(s) for s in spacing)
    unit = float(np.prod(spacing)) / (1000.0 if len(spacing) == 3 else 100.0)  # ml, or cm² in 2-D
    box = union_box([bounding_box(mask) for mask in masks], masks[0].shape, margin=1)
    if box is None:  # nobody drew anything: a 1-voxel crop keeps the code paths uniform
        box = tuple(slice(0, 1) for _ in spacing)
    crops = [mask[box] for mask in masks]
    table = _area_table(spacing)
    readers = [_Reader(crop, table) for crop in crops]

    directed: dict[tuple[int, int], np.ndarray] = {}
    for j, target in enumerate(readers):
        if target.surface.empty:
            continue
        sources = [i for i, r in enumerate(readers) if i != j and not r.surface.empty]
        if not sources:
            continue
        distance = target.surface.distance_map(spacing)
        for i in sources:
            directed[i, j] = distance[readers[i].surface.borders]
        del distance
    voxel_directed = _voxel_distances(readers, spacing) if convention == "voxels" else {}

    results = []
    for i in range(len(readers)):
        for j in range(i + 1, len(readers)):
            ra, rb = readers[i], readers[j]
            if ra.surface.empty or rb.surface.empty:
                results.append(_empty_pair(names[i], names[j], ra, rb, unit, tolerance_mm, empty))
                continue
            results.append(
                _pair(names[i], names[j], ra, rb, directed[i, j], directed[j, i], unit, tolerance_mm, percent)
            )
            if convention == "voxels":
                results[-1] = _with_voxel_distances(results[-1], voxel_directed[i, j], voxel_directed[j, i], percent)
    return results


def _pair(a, b, ra, rb, d_ab, d_ba, unit, tolerance_mm, percent) -> PairMetrics:
    both = int(np.count_nonzero(ra.mask & rb.mask))
    total = ra.voxels + rb.voxels
    va, vb = ra.voxels * unit, rb.voxels * unit
    sa, sb = ra.surface, rb.surface
    hd = float(max(d_ab.max(), d_ba.max()))
    hd95 = max(_weighted_percentile(d_ab, sa.areas, percent), _weighted_percentile(d_ba, sb.areas, percent))
    weighted_ab, weighted_ba = float(d_ab @ sa.areas), float(d_ba @ sb.areas)
    assd = (weighted_ab + weighted_ba) / (sa.total_area + sb.total_area)
    limit = tolerance_mm * (1.0 + TOLERANCE_SLACK)
    within = float(sa.areas[d_ab <= limit].sum() + sb.areas[d_ba <= limit].sum())
    return PairMetrics(
        a=a,
        b=b,
        dice=2.0 * both / total,
        jaccard=both / (total - both),
        volume_a_ml=va,
        volume_b_ml=vb,
        volume_diff_ml=vb - va,
        volume_similarity=2 * (va - vb) / (va + vb),
        hd_mm=hd,
        hd95_mm=hd95,
        assd_mm=assd,
        asd_ab_mm=weighted_ab / sa.total_area,
        asd_ba_mm=weighted_ba / sb.total_area,
        surface_dice=within / (sa.total_area + sb.total_area),
        tolerance_mm=float(tolerance_mm),
    )


def _voxel_distances(readers, spacing) -> dict[tuple[int, int], np.ndarray]:
    """SimpleITK's convention: from each foreground voxel centre to the nearest foreground voxel of the other."""
    directed = {}
    for j, target in enumerate(readers):
        if target.voxels == 0:
            continue
        distance = distance_to(target.mask, spacing)
        for i, source in enumerate(readers):
            if i != j and source.voxels:
                directed[i, j] = distance[source.mask]
    return directed


def _with_voxel_distances(pair: PairMetrics, d_ab, d_ba, percent) -> PairMetrics:
    mean_ab, mean_ba = float(d_ab.mean()), float(d_ba.mean())
    return replace(
        pair,
        hd_mm=float(max(d_ab.max(), d_ba.max())),
        hd95_mm=float(max(np.percentile(d_ab, percent), np.percentile(d_ba, percent))),
        assd_mm=(mean_ab + mean_ba) / 2,
        asd_ab_mm=mean_ab,
        asd_ba_mm=mean_ba,
    )
