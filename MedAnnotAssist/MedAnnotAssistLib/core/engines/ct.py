"""Built-in CT engine: body, lungs, airways, skeleton and subcutaneous fat from Hounsfield units alone.

No model weights: thresholds, morphology and connected components (scipy.ndimage, SimpleITK), vectorised.
Method (docs/presegmentation.md). The CT is block-averaged (``sitk.BinShrink``) to a working grid of about
``working_mm`` (3 mm) and re-oriented in memory to array axes (S, P, L) from the direction cosines (ITK LPS:
+x is the patient's left, +y posterior), so sides never depend on how the array is stored. On that grid:

- body: HU > ``body_hu`` opened in-plane by 4 mm (detaches table, pads, cables); the largest component and
  any other of >= 5 % of it and >= 30 mm thick front to back (arms, legs; a table is thin), re-dilated onto
  HU > ``body_hu``. Every region not connected in 3-D through non-body voxels to a side of the image is
  inside: enclosed air, the lungs, even where they leave through the top or bottom slice. A side-touching
  region of lung-like HU walled by the body stays inside (lungs cut by a small field of view).
- lungs: components of HU < ``lung_hu`` inside the body of >= ``min_lung_ml`` with <= 30 % of voxels below
  -950 HU and >= 50 % in [-950, -600) (parenchyma; bowel gas is mostly below -950), minus the airways, holes
  filled slice-wise (vessels). Each component goes to the side of the torso's midline it lies on; one across
  the midline is split by erosion, else at the midline.
- airways: compact (0.3-8 cm2) regions below ``airway_hu`` in an axial slice, between both lungs, central,
  ringed by non-parenchyma (the trachea), seed the air below ``airway_hu`` within 50 mm in-plane (trachea,
  main bronchi); the threshold steps down to -1000 HU while that exceeds ``max_airway_ml``. Empty, not an
  error, when no seed exists (abdominal scans); seeds spanning < 20 mm in z are no trachea.
- skeleton: cortex HU > ``bone_hu`` (no metal > ``metal_hu``) closed, its slice-wise holes filled; marrow
  HU > ``marrow_hu`` where a 9 mm closing of the cortex encloses it in an axial or sagittal hole <= 25 cm2
  (vertebral bodies of osteoporotic bone; not the whole thorax); components >= 0.1 ml.
- subcutaneous_fat: fat (``fat_hu``) in the body outside the muscle wall, i.e. outside the slice-wise holes of
  the tissue (> fat_hu[1]) deeper than 5 mm under the skin, opened by 3 mm and closed by 10 mm; in slices
  where that wall is open (holes < 70 % of its convex hull) the torso's hull; smoothed along z (6 mm).

When the working grid is coarser than the image, labels come back by nearest neighbour and every working
voxel with another label in its 26-neighbourhood is re-decided voxel by voxel on the original HU with the
same thresholds, among those labels (marrow threshold where the interpolated skeleton covers the voxel).

Refusal (EngineError): not 3-D, not scalar, constant, or not HU-like. HU-like, on the working grid: 1st
percentile <= -800 (air outside the body or in the lungs; padding below -1024 counts as air), >= 5 % of
voxels in [-200, 300] (soft tissue), 99th percentile <= 3100. MR, stored values without the rescale and
crops without air fail.

Confidence of a structure: 1 - the fraction of its boundary voxels (working grid) whose HU lies within
``near_hu`` of the threshold that decided it (fat: of either limit): how sharp its edge is; x0.8 for lungs
split at the midline; 0 for an empty structure. Case uncertainty: the boundary-voxel-weighted mean of
(1 - confidence) over the non-empty requested structures.

The "body" label holds the body voxels no other structure claims: the whole body is ``labels > 0``.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
from scipy import ndimage as ndi

from ..jobs import check_cancel
from ..protocol import Code
from .base import LEFT, RIGHT, TISSUE, Engine, EngineError, EngineInfo, EngineResult, anatomy, check_image, provenance

VERSION = "1.0.0"
LUNG = Code("SCT", "39607008", "Lung")
STRUCTURES = (
    anatomy("body", "Body", "#f1d691", Code("SCT", "38266002", "Entire body")),
    anatomy("lung_left", "Left lung", "#d1b3a1", LUNG, LEFT),
    anatomy("lung_right", "Right lung", "#c5a591", LUNG, RIGHT),
    anatomy("airways", "Airways", "#b6daf2", Code("SCT", "110726009", "Trachea and bronchus")),
    anatomy("skeleton", "Skeleton", "#f1d6ab", Code("SCT", "272673000", "Bone"), category=TISSUE),
    # Slicer's DICOM tables have no "subcutaneous fat": tissue "Body fat", the subcutaneous part of it
    anatomy("subcutaneous_fat", "Subcutaneous fat", "#e6dc46", Code("SCT", "248300009", "Body fat"), category=TISSUE),
)
BODY, LUNG_L, LUNG_R, AIRWAY, BONE, FAT = range(1, 7)  # internal labels, = position in STRUCTURES + 1
_CROSS = ndi.generate_binary_structure(3, 1)
_FLAT = np.zeros((3, 3, 3), bool)
_FLAT[1] = ndi.generate_binary_structure(2, 1)


class CTEngine(Engine):
    """Threshold-and-morphology segmentation of a CT in Hounsfield units (see the module docstring)."""

    name = "ct"

    def __init__(self, working_mm=3.0, body_hu=-500.0, lung_hu=-400.0, airway_hu=-900.0, bone_hu=150.0, marrow_hu=60.0,
                 fat_hu=(-190.0, -30.0), metal_hu=2500.0, min_lung_ml=10.0, max_airway_ml=100.0):  # fmt: skip
        self.working_mm = float(working_mm)
        self.body_hu, self.lung_hu, self.airway_hu = float(body_hu), float(lung_hu), float(airway_hu)
        self.bone_hu, self.marrow_hu, self.metal_hu = float(bone_hu), float(marrow_hu), float(metal_hu)
        self.fat_hu = (float(fat_hu[0]), float(fat_hu[1]))
        self.min_lung_ml, self.max_airway_ml = float(min_lung_ml), float(max_airway_ml)
        self.near_hu = {BODY: 100.0, LUNG_L: 100.0, LUNG_R: 100.0, AIRWAY: 50.0, BONE: 50.0, FAT: 20.0}

    def info(self) -> EngineInfo:
        return EngineInfo(
            self.name,
            VERSION,
            "Body, lungs, airways, skeleton and subcutaneous fat from HU thresholds and morphology (no model)",
            "CT",
            STRUCTURES,
        )

    def parameters(self) -> dict:
        """The thresholds and sizes in use (recorded in the provenance)."""
        names = ("working_mm", "body_hu", "lung_hu", "airway_hu", "bone_hu", "marrow_hu", "metal_hu", "min_lung_ml",
                 "max_airway_ml")  # fmt: skip
        parameters = {name: getattr(self, name) for name in names} | {"fat_hu": list(self.fat_hu)}
        return parameters | {"near_hu": {STRUCTURES[k - 1].id: v for k, v in self.near_hu.items()}}

    def run(self, image, structures=None, prompts=None, progress=None, cancel=None) -> EngineResult:
        import SimpleITK as sitk

        started = time.time()
        report = progress or (lambda fraction, message: None)
        check_image(image, "CT", self.name)
        wanted = self.wanted(structures)
        spacing = np.array(image.GetSpacing(), float)  # i, j, k
        size = np.array(image.GetSize())
        factors = np.maximum(1, np.minimum(np.round(self.working_mm / spacing), np.maximum(size // 8, 1))).astype(int)
        report(0.05, "checking intensities")
        coarse = sitk.BinShrink(image, [int(f) for f in factors]) if factors.max() > 1 else image
        hu = sitk.GetArrayFromImage(coarse).astype(np.float32)
        check_hu(hu, self.name)
        hu = np.clip(hu, -1024, 3071)  # padding outside the reconstruction circle is air
        check_cancel(cancel, "CT pre-segmentation")
        order, flips = _orientation(np.array(image.GetDirection()).reshape(3, 3))
        hu = _to_lps(hu, order, flips)
        spacing_zyx = (spacing * factors)[::-1][list(order)]
        seg = _Segmenter(self, hu, spacing_zyx, report, cancel)
        labels_lps = seg.run(wanted)
        confidence, uncertainty = seg.confidence(labels_lps, wanted)
        lut = np.zeros(7, np.uint8)  # internal label -> output value
        names = {}
        for value, structure_id in enumerate(wanted, start=1):
            names[value] = structure_id
            lut[[s.id for s in STRUCTURES].index(structure_id) + 1] = value
        if "body" in wanted:
            lut[1:][lut[1:] == 0] = lut[BODY]  # unrequested structures inside the body stay body
        labels = _from_lps(labels_lps, order, flips)
        if factors.max() > 1:
            report(0.85, "full-resolution boundaries")
            labels = self._refine(sitk.GetArrayViewFromImage(image), labels, factors[::-1], lut, cancel)
        else:
            labels = lut[labels]
        parameters = self.parameters() | {"working_factors_ijk": factors.tolist()}
        result_provenance = provenance(self.info(), parameters, started)
        result_provenance["notes"] = seg.notes
        report(1.0, "done")
        return EngineResult(labels, names, confidence, uncertainty, result_provenance)

    def _refine(self, original, labels, factors, lut, cancel) -> np.ndarray:
        """Nearest-neighbour upsampling, then a voxel-wise decision on the original HU in boundary blocks;
        ``lut`` maps internal labels to output values."""
        fk, fj, fi = (int(f) for f in factors)
        ck, cj, ci = labels.shape
        out = np.empty(original.shape, np.uint8)
        view = out[: ck * fk, : cj * fj, : ci * fi].reshape(ck, fk, cj, fj, ci, fi)
        view[...] = lut[labels][:, None, :, None, :, None]
        out[ck * fk :] = out[ck * fk - 1]
        out[:, cj * fj :] = out[:, cj * fj - 1 : cj * fj]
        out[:, :, ci * fi :] = out[:, :, ci * fi - 1 : ci * fi]
        padded = np.pad(np.left_shift(1, labels).astype(np.uint8), 1, mode="edge")
        near = np.zeros(labels.shape, np.uint8)  # bit l: label l within one working voxel (26-neighbourhood)
        for a, b, c in itertools.product(range(3), repeat=3):
            near |= padded[a : a + ck, b : b + cj, c : c + ci]
        band = (near & (near - 1)) != 0  # more than one label around
        check_cancel(cancel, "CT pre-segmentation")
        hu_view = original[: ck * fk, : cj * fj, : ci * fi].reshape(ck, fk, cj, fj, ci, fi)
        bone = np.pad(labels == BONE, 1, mode="edge").astype(np.float32)
        k, j, i = np.nonzero(band)
        for start in range(0, len(k), 40_000):  # bounded memory: 40k working voxels at a time
            kp, jp, ip = k[start : start + 40_000], j[start : start + 40_000], i[start : start + 40_000]
            hu = hu_view[kp, :, jp, :, ip, :]
            own = labels[kp, jp, ip][:, None, None, None]
            bits = near[kp, jp, ip][:, None, None, None]
            inside_bone = np.zeros(hu.shape, bool)
            with_bone = np.nonzero((bits[:, 0, 0, 0] >> BONE) & 1)[0]
            inside_bone[with_bone] = _occupancy(bone, kp[with_bone], jp[with_bone], ip[with_bone], (fk, fj, fi)) >= 0.5
            view[kp, :, jp, :, ip, :] = lut[self._decide(hu, own, bits, inside_bone)]
        return out

    def _decide(self, hu, own, bits, inside_bone) -> np.ndarray:
        """Per original voxel of a boundary block: the first label of its neighbourhood whose HU test passes;
        ``inside_bone``: the voxel lies inside the working-grid skeleton, linearly interpolated (marrow)."""

        def has(value):
            return (bits >> value) & 1 == 1

        air = hu < self.lung_hu
        own_air = (own == LUNG_L) | (own == LUNG_R) | (own == AIRWAY)
        rules = (  # highest priority first; the block's own label when none applies
            (own_air & air, own),
            (has(AIRWAY) & air, AIRWAY),
            (has(LUNG_L) & air, LUNG_L),
            (has(LUNG_R) & air, LUNG_R),
            (has(BONE) & (hu > np.where(inside_bone, self.marrow_hu, self.bone_hu)) & (hu < self.metal_hu), BONE),
            (has(FAT) & (hu >= self.fat_hu[0]) & (hu <= self.fat_hu[1]), FAT),
            (has(0) & (hu < self.body_hu), 0),
            ((bits > 1) & (hu >= self.body_hu), BODY),
        )
        decided = np.broadcast_to(own, hu.shape)
        for test, value in reversed(rules):  # lowest priority first, so that higher ones overwrite
            decided = np.where(test, value, decided)
        return decided.astype(np.uint8)


def _occupancy(padded, k, j, i, factors) -> np.ndarray:
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


def check_hu(hu: np.ndarray, engine: str = "ct") -> None:
    """Raise EngineError unless ``hu`` (the working grid, not clamped) looks like a CT in Hounsfield units."""
    low, high = float(hu.min()), float(hu.max())
    if high - low < 1:
        raise EngineError(f"image: engine '{engine}' got a constant image (all voxels {low:g}): nothing to segment")
    p1, p99 = np.percentile(hu, [1, 99])
    tissue = float(np.mean((hu >= -200) & (hu <= 300)))
    problems = []
    if p1 > -800:
        problems.append(f"no air: 1st percentile {p1:.0f}, expected <= -800 HU")
    if tissue < 0.05:
        problems.append(f"{tissue:.1%} of voxels in the soft-tissue range [-200, 300] HU, expected >= 5 %")
    if p99 > 3100:
        problems.append(f"99th percentile {p99:.0f}, expected <= 3100 HU")
    if problems:
        raise EngineError(
            f"image: engine '{engine}' needs a CT in Hounsfield units (air near -1000, soft tissue near 0); "
            f"this image is not HU-like ({'; '.join(problems)}). Is it an MR, or a CT without the rescale slope "
            "and intercept applied?"
        )


def _orientation(direction: np.ndarray) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Array axis (k, j, i) feeding each oriented axis (S, P, L), and whether it runs the other way."""
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(direction[p[c], c]) for c in range(3)))
    physical = {best[c]: c for c in range(3)}  # physical axis (x, y, z) -> index axis (i, j, k)
    order = tuple(2 - physical[2 - a] for a in range(3))  # oriented axis a is physical axis 2 - a
    flips = tuple(direction[2 - a, 2 - order[a]] < 0 for a in range(3))
    return order, flips


def _to_lps(array, order, flips):
    array = array.transpose(order)
    return np.ascontiguousarray(array[tuple(slice(None, None, -1) if f else slice(None) for f in flips)])


def _from_lps(array, order, flips):
    array = array[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    return np.ascontiguousarray(array.transpose(np.argsort(order)))


def _disk(radius_mm: float, spacing) -> np.ndarray:
    """A flat (in-plane) elliptic footprint of ``radius_mm`` for (z, y, x) spacing."""
    rj, ri = (max(1, int(round(radius_mm / s))) for s in spacing[1:])
    y, x = np.ogrid[-rj : rj + 1, -ri : ri + 1]
    return ((y * spacing[1]) ** 2 + (x * spacing[2]) ** 2 <= radius_mm**2 + 1e-6)[None]


def _padded(operation, mask, footprint):
    """``operation(mask, footprint)`` with the image border padded, so that closings do not erode at it."""
    pad = [s // 2 for s in footprint.shape]
    crop = tuple(slice(p, p + n) for p, n in zip(pad, mask.shape, strict=True))
    return operation(np.pad(mask, [(p, p) for p in pad]), footprint)[crop]


def fill_slices(mask: np.ndarray, max_voxels: int | None = None) -> np.ndarray:
    """Fill the holes of every axial slice (axis 0) of ``mask`` at once (only those up to ``max_voxels``)."""
    background, _ = ndi.label(~mask, _FLAT)
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


def _component_sizes(labels):
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return sizes


class _Segmenter:
    """The steps on the working grid, oriented (S, P, L); ``notes`` records what was found or not."""

    def __init__(self, engine: CTEngine, hu, spacing, report, cancel):
        self.e, self.hu, self.spacing = engine, hu, np.asarray(spacing, float)
        self.voxel_ml = float(np.prod(self.spacing)) / 1000.0
        self.report, self.cancel = report, cancel
        self.notes: dict = {}
        self.lung_split = "components"

    def step(self, fraction: float, message: str) -> None:
        check_cancel(self.cancel, "CT pre-segmentation")
        self.report(fraction, message)

    def run(self, wanted) -> np.ndarray:
        """Internal labels (BODY ... FAT); structures not in ``wanted`` are skipped where nothing needs them."""
        self.step(0.1, "body")
        body, torso = self.body()
        labels = body.astype(np.uint8)
        if {"lung_left", "lung_right", "airways"} & set(wanted):
            self.step(0.3, "lungs and airways")
            lung_air = self.lung_air(body & (self.hu < self.e.lung_hu))
            airways = self.airways(body, lung_air)
            self.step(0.45, "left and right lung")
            left, right = self.split_lungs(lung_air & ~ndi.binary_dilation(airways, _CROSS), torso)
        if "subcutaneous_fat" in wanted:
            self.step(0.55, "subcutaneous fat")
            labels[self.fat(body, torso)] = FAT
        if "skeleton" in wanted:
            self.step(0.7, "skeleton")
            labels[self.skeleton(body)] = BONE
        if {"lung_left", "lung_right", "airways"} & set(wanted):
            labels[left] = LUNG_L
            labels[right] = LUNG_R
            labels[airways] = AIRWAY
        self.notes["absent"] = [s.id for v, s in enumerate(STRUCTURES, 1) if s.id in wanted and not (labels == v).any()]
        return labels

    # -- body ---------------------------------------------------------------------------------------------
    def body(self) -> tuple[np.ndarray, np.ndarray]:
        """(body, torso): everything not reached from the image sides through non-body voxels; torso: the
        largest tissue component (no arms), for the midline."""
        hu, e = self.hu, self.e
        tissue = hu > e.body_hu
        disk = _disk(4.0, self.spacing)
        components, _ = ndi.label(_padded(ndi.binary_opening, tissue, disk))
        sizes = _component_sizes(components)
        if sizes.max() == 0:
            raise EngineError("image: no body found (no tissue above the body threshold after opening)")
        largest = int(sizes.argmax())
        keep = np.zeros(len(sizes), bool)
        keep[largest] = True
        for value in np.nonzero((sizes >= 0.05 * sizes[largest]) & (sizes * self.voxel_ml >= 10))[0]:
            part = components == value  # few components: arms, legs, a thick table
            columns = np.count_nonzero(part.any(axis=1))  # (z, x) columns it occupies
            keep[value] |= sizes[value] / max(columns, 1) * self.spacing[1] >= 30.0  # >= 30 mm thick (AP)
        kept = keep[components]
        torso = components == largest
        body_tissue = tissue & ndi.binary_dilation(kept, disk)
        outside_parts, _ = ndi.label(~body_tissue)
        side = np.unique(np.concatenate([outside_parts[:, [0, -1], :].ravel(), outside_parts[:, :, [0, -1]].ravel()]))
        side = side[side > 0]
        outside = np.zeros(outside_parts.max() + 1, bool)
        outside[side] = True
        rescued = [int(v) for v in side if self._walled_lung(outside_parts == v, body_tissue)]
        outside[rescued] = False
        if rescued:
            self.notes["lung_at_image_side"] = True
        body = ~outside[outside_parts]
        return body, torso & body

    def _walled_lung(self, part, body_tissue) -> bool:
        """A region touching the image side that is lung parenchyma cut by the field of view."""
        n = np.count_nonzero(part)
        if n * self.voxel_ml < self.e.min_lung_ml:
            return False
        values = self.hu[part]
        parenchyma = np.mean((values > -920) & (values < -600))
        if np.mean(values < -950) > 0.2 or parenchyma < 0.6:
            return False
        ring = ndi.binary_dilation(part, _CROSS) & ~part
        return np.mean(body_tissue[ring]) >= 0.6

    # -- lungs and airways --------------------------------------------------------------------------------
    def lung_air(self, air) -> np.ndarray:
        """The air components that look like lung: big enough, mostly not pure air."""
        components, _ = ndi.label(air)
        sizes = _component_sizes(components)
        count = np.maximum(sizes, 1)
        pure = np.bincount(components.ravel(), weights=(self.hu < -950).ravel(), minlength=len(sizes)) / count
        band = np.bincount(components.ravel(), weights=(self.hu < -600).ravel(), minlength=len(sizes)) / count - pure
        lung = (sizes * self.voxel_ml >= self.e.min_lung_ml) & (pure <= 0.3) & (band >= 0.5)
        lung[0] = False
        return lung[components]

    def airways(self, body, lung) -> np.ndarray:
        """Trachea and main bronchi: the air around compact tracheal seeds between both lungs."""
        hu, e, sp = self.hu, self.e, self.spacing
        seeds = self._tracheal_seeds(body, lung)
        empty = np.zeros(hu.shape, bool)
        if not seeds.any():
            self.notes["airways"] = "no trachea in the volume"
            return empty
        z, y, x = np.nonzero(seeds)
        near = np.zeros(hu.shape, bool)  # within 50 mm in-plane of the seeds
        y0, y1 = np.searchsorted(np.arange(hu.shape[1]) * sp[1], [y.min() * sp[1] - 50, y.max() * sp[1] + 50])
        x0, x1 = np.searchsorted(np.arange(hu.shape[2]) * sp[2], [x.min() * sp[2] - 50, x.max() * sp[2] + 50])
        near[:, y0:y1, x0:x1] = True
        for threshold in (e.airway_hu, -950.0, -980.0, -1000.0):
            parts, _ = ndi.label(body & near & (hu < threshold) | seeds)
            grown = np.isin(parts, np.unique(parts[seeds]))
            volume = np.count_nonzero(grown) * self.voxel_ml
            if volume <= e.max_airway_ml:
                zs = np.nonzero(grown.any(axis=(1, 2)))[0]
                if (zs.max() - zs.min() + 1) * sp[0] < 20.0:
                    self.notes["airways"] = "air seed shorter than 20 mm: not a trachea"
                    return empty
                self.notes["airways"] = f"grown below {threshold:g} HU, {volume:.0f} ml"
                return grown
        self.notes["airways"] = "leaked into the lungs at every threshold: seeds only"
        return seeds

    def _tracheal_seeds(self, body, lung) -> np.ndarray:
        hu, sp = self.hu, self.spacing
        candidates, n = ndi.label(body & (hu < self.e.airway_hu), _FLAT)
        if n == 0 or not lung.any():
            return np.zeros(hu.shape, bool)
        area = _component_sizes(candidates) * sp[1] * sp[2] / 100.0  # cm2
        z, y, x = np.nonzero(candidates)
        value = candidates[z, y, x]
        cy = np.bincount(value, weights=y, minlength=n + 1) / np.maximum(np.bincount(value, minlength=n + 1), 1)
        cx = np.bincount(value, weights=x, minlength=n + 1) / np.maximum(np.bincount(value, minlength=n + 1), 1)
        cz = np.zeros(n + 1, int)
        cz[value] = z

        # per slice: extent of the lungs and of the body along x and y
        def extent(mask, axis):
            present = mask.any(axis=3 - axis)
            idx = np.arange(mask.shape[axis])
            low = np.where(present, idx, mask.shape[axis]).min(axis=1)
            high = np.where(present, idx, -1).max(axis=1)
            return low, high

        lx0, lx1 = extent(lung, 2)
        ly0, ly1 = extent(lung, 1)
        bx0, bx1 = extent(body, 2)
        margin = 10.0 / sp[2]
        mid, half = (bx0 + bx1) / 2.0, (bx1 - bx0) / 2.0
        ok = (area >= 0.3) & (area <= 8.0)
        ok &= (lx0[cz] < cx - margin) & (lx1[cz] > cx + margin)  # lung on both sides
        ok &= (ly0[cz] <= cy) & (cy <= ly1[cz])
        ok &= np.abs(cx - mid[cz]) <= 0.15 * 2 * half[cz]
        ok[0] = False
        if not ok.any():
            return np.zeros(hu.shape, bool)
        chosen = ok[candidates]
        ring = ndi.binary_dilation(chosen, _FLAT) & ~chosen
        owner = ndi.grey_dilation(np.where(chosen, candidates, 0), footprint=_FLAT)
        walled = np.bincount(owner[ring], weights=hu[ring] > -750.0, minlength=n + 1)  # not parenchyma
        walled /= np.maximum(np.bincount(owner[ring], minlength=n + 1), 1)
        ok &= walled >= 0.5
        return ok[candidates]

    def split_lungs(self, lungs, torso) -> tuple[np.ndarray, np.ndarray]:
        """Left and right lung by the side of the body's midline (ITK LPS: +x, larger index, is left)."""
        lungs = fill_slices(lungs)
        left, right = np.zeros_like(lungs), np.zeros_like(lungs)
        components, n = ndi.label(lungs)
        if n == 0:
            self.notes["lungs"] = "no lung in the volume"
            return left, right
        slices = lungs.any(axis=(1, 2)) & torso.any(axis=(1, 2))
        columns = np.nonzero(torso[slices] if slices.any() else torso)[2]
        midline = columns.mean() if len(columns) else lungs.shape[2] / 2
        sizes = _component_sizes(components)
        xs = np.arange(lungs.shape[2])
        on_left = np.bincount(components.ravel(), weights=np.broadcast_to(xs > midline, lungs.shape).ravel(),
                              minlength=n + 1) / np.maximum(sizes, 1)  # fmt: skip
        method = "components"
        for value in np.nonzero(sizes * self.voxel_ml >= 1.0)[0]:
            part = components == value
            if on_left[value] >= 0.85:
                left |= part
            elif on_left[value] <= 0.15:
                right |= part
            else:
                l_part, r_part, method = self._split(part, midline)
                left |= l_part
                right |= r_part
        self.notes["lungs"] = f"left/right by {method}, midline at x index {midline:.1f} of the working grid"
        self.lung_split = method
        return left, right

    def _split(self, part, midline):
        """Split one component lying across the midline: erode until two sides separate, else the midline."""
        eroded = part
        for _ in range(6):
            eroded = ndi.binary_erosion(eroded, _CROSS)
            pieces, n = ndi.label(eroded)
            if n < 2:
                continue
            sizes = _component_sizes(pieces)
            big = np.argsort(sizes)[::-1][:2]
            if sizes[big[1]] < 0.1 * sizes[big[0]]:
                continue
            cx = [np.nonzero(pieces == b)[2].mean() for b in big]
            if (cx[0] - midline) * (cx[1] - midline) >= 0:
                continue
            markers = np.where(np.isin(pieces, big), pieces, 0)
            _, index = ndi.distance_transform_edt(markers == 0, sampling=self.spacing, return_indices=True)
            nearest = markers[tuple(index)]
            left_value = big[0] if cx[0] > midline else big[1]
            return part & (nearest == left_value), part & (nearest != left_value), "erosion"
        xs = np.arange(part.shape[2])[None, None, :]
        return part & (xs > midline), part & (xs <= midline), "midline"

    # -- skeleton and fat ---------------------------------------------------------------------------------
    def skeleton(self, body) -> np.ndarray:
        """Cortex (> bone_hu) closed; marrow (> marrow_hu) where a closing of 9 mm encloses it in an axial or
        sagittal hole of at most 25 cm2 (vertebral bodies, not the thorax); metal and small bits dropped."""
        hu, e, sp = self.hu, self.e, self.spacing
        metal = ndi.binary_dilation(hu > e.metal_hu, _CROSS)
        cortex = _padded(ndi.binary_closing, body & (hu > e.bone_hu) & ~metal, _CROSS)
        small = int(2500.0 / (sp[1] * sp[2]))
        envelope = fill_slices(_padded(ndi.binary_closing, cortex, _disk(9.0, sp)), small)
        envelope = np.moveaxis(fill_slices(np.moveaxis(envelope, 2, 0), int(2500.0 / (sp[0] * sp[1]))), 0, 2)
        bone = (fill_slices(cortex, small) | (envelope & (hu > e.marrow_hu))) & body & ~metal
        components, _ = ndi.label(bone)
        keep = _component_sizes(components) * self.voxel_ml >= 0.1
        keep[0] = False
        return keep[components]

    def fat(self, body, torso) -> np.ndarray:
        """Fat outside the muscle wall. Wall: tissue (> fat_hu[1]) deeper than 5 mm under the skin, opened by
        3 mm; inside it: its holes after a 10 mm closing, in each axial slice; where that misses more than 30 %
        of the wall's convex hull (the wall is open), the torso's hull; then closed by 6 mm along z."""
        hu, e, sp = self.hu, self.e, self.spacing
        fat = body & (hu >= e.fat_hu[0]) & (hu <= e.fat_hu[1])
        deep = ~_padded(ndi.binary_dilation, ~body, _disk(5.0, sp))
        wall = _padded(ndi.binary_opening, deep & (hu > e.fat_hu[1]), _disk(3.0, sp))
        inner = fill_slices(_padded(ndi.binary_closing, wall, _disk(10.0, sp)))
        hull = convex_hull_slices(wall & torso, sp)
        open_wall = inner.sum(axis=(1, 2)) < 0.7 * hull.sum(axis=(1, 2))
        inner[open_wall] |= hull[open_wall]
        reach = max(1, int(round(6.0 / sp[0])))
        inner = _padded(ndi.binary_closing, inner, np.ones((2 * reach + 1, 1, 1), bool))
        return fat & ~inner

    # -- confidence ---------------------------------------------------------------------------------------
    def confidence(self, labels, wanted) -> tuple[dict[str, float], float]:
        """Per structure: 1 - the near-threshold fraction of its boundary voxels; the case: their pooled mean."""
        hu, e = self.hu, self.e
        confidence, near_total, edge_total = {}, 0.0, 0
        for value, structure in enumerate(STRUCTURES, start=1):
            if structure.id not in wanted:
                continue
            mask = labels > 0 if value == BODY else labels == value
            edge = mask & ~ndi.binary_erosion(mask, _CROSS)
            values = hu[edge]
            if not len(values):
                confidence[structure.id] = 0.0
                continue
            limits = {BODY: [e.body_hu], LUNG_L: [e.lung_hu], LUNG_R: [e.lung_hu], AIRWAY: [e.airway_hu],
                      BONE: [e.bone_hu], FAT: list(e.fat_hu)}[value]  # fmt: skip
            near = np.min([np.abs(values - t) for t in limits], axis=0) < e.near_hu[value]
            score = 1.0 - float(near.mean())
            if value in (LUNG_L, LUNG_R) and self.lung_split == "midline":
                score *= 0.8
            confidence[structure.id] = round(score, 4)
            near_total += (1.0 - score) * len(values)
            edge_total += len(values)
        return confidence, round(near_total / edge_total, 4) if edge_total else 1.0
