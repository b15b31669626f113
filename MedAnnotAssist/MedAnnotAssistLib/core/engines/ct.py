"""Built-in CT engine: body, lungs, airways, skeleton, subcutaneous fat and, on a contrast-enhanced CT, the blood
pool (vessels and heart chambers), from Hounsfield units and shape alone.

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
- contrast phase and blood pool (ct_phase, ct_vessels): blood cores (thick, homogeneous, not enclosed by
  brighter tissue) give the phase (native, arterial, portal-venous) with a confidence; the pool grows from them
  over the lumen's edge and along tubes (Hessian), never brighter than blood, never into marrow.
- skeleton: cortex HU > ``bone_hu`` (no metal > ``metal_hu``) closed, with the slice-wise holes that are marrow
  (small, or fatty; not the spinal canal); marrow HU > ``marrow_hu`` where a 9 mm closing of the cortex encloses it
  in an axial or sagittal hole <= 25 cm2 (vertebral bodies of osteoporotic bone; not the whole thorax); without the
  discs it holds (a darker layer between endplates); components >= 0.1 ml; all outside the blood pool, without the
  plaque and bright rims that lie on it, nor enhanced parenchyma (no voxel above 250 HU) (ct_bone, ct_vessels).
- subcutaneous_fat: fat (``fat_hu``) in the body outside the muscle wall, i.e. outside the slice-wise holes of
  the tissue (> fat_hu[1]) deeper than 5 mm under the skin, opened by 3 mm and closed by 10 mm; in slices
  where that wall is open (holes < 70 % of its convex hull) the torso's hull; smoothed along z (6 mm).

When the working grid is coarser than the image, labels come back by nearest neighbour and every working
voxel with another label in its 26-neighbourhood is re-decided voxel by voxel on the original HU with the
same thresholds, among those labels (marrow threshold where the interpolated skeleton covers the voxel; blood
within its lumen's HU range, and next to blood bone only inside the interpolated skeleton); where bone meets
blood, original skeleton voxels brighter than the lumen that do not connect to bone away from blood are plaque.
Where bone meets another label, cavities enclosed by bone in the slice are marrow, and the outer layer keeps only
the voxels at least half-way from water to the local cortex peak (full width at half maximum; ct_bone).

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
from .base import Engine, EngineError, EngineInfo, EngineResult, check_image, provenance
from .ct_bone import bone_constants, bone_edges
from .ct_grid import FineBlocks, from_lps, occupancy, orientation, to_lps
from .ct_segmenter import Segmenter
from .ct_structures import AIRWAY, BLOOD, BODY, BONE, FAT, LUNG_L, LUNG_R, STRUCTURES
from .ct_vessels import contrast_constants

VERSION = "1.2.0"


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
        self.near_hu = {BODY: 100.0, LUNG_L: 100.0, LUNG_R: 100.0, AIRWAY: 50.0, BONE: 50.0, FAT: 20.0, BLOOD: 50.0}

    def info(self) -> EngineInfo:
        return EngineInfo(
            self.name,
            VERSION,
            "Body, lungs, airways, skeleton, subcutaneous fat and the contrast-enhanced blood pool from HU thresholds, "
            "shape and morphology (no model)",
            "CT",
            STRUCTURES,
        )

    def parameters(self) -> dict:
        """The thresholds and sizes in use (recorded in the provenance)."""
        names = ("working_mm", "body_hu", "lung_hu", "airway_hu", "bone_hu", "marrow_hu", "metal_hu", "min_lung_ml",
                 "max_airway_ml")  # fmt: skip
        parameters = {name: getattr(self, name) for name in names} | {"fat_hu": list(self.fat_hu)}
        parameters["near_hu"] = {STRUCTURES[k - 1].id: v for k, v in self.near_hu.items()}
        return parameters | {"contrast": contrast_constants(), "bone": bone_constants()}

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
        order, flips = orientation(np.array(image.GetDirection()).reshape(3, 3))
        hu = to_lps(hu, order, flips)
        spacing_zyx = (spacing * factors)[::-1][list(order)]
        fine = FineBlocks(sitk.GetArrayViewFromImage(image), factors[::-1], order, flips, hu.shape)
        seg = Segmenter(self, hu, spacing_zyx, report, cancel, fine)
        labels_lps = seg.run(wanted)
        confidence, uncertainty = seg.confidence(labels_lps, wanted)
        lut = np.zeros(len(STRUCTURES) + 1, np.uint8)  # internal label -> output value
        names = {}
        for value, structure_id in enumerate(wanted, start=1):
            names[value] = structure_id
            lut[[s.id for s in STRUCTURES].index(structure_id) + 1] = value
        if "body" in wanted:
            lut[1:][lut[1:] == 0] = lut[BODY]  # unrequested structures inside the body stay body
        labels = from_lps(labels_lps, order, flips)
        if factors.max() > 1:
            report(0.85, "full-resolution boundaries")
            blood = (from_lps(seg.pool.low, order, flips), from_lps(seg.pool.high, order, flips))
            original = sitk.GetArrayViewFromImage(image)
            labels = self._refine(original, labels, factors[::-1], lut, cancel, blood, spacing[::-1])
        else:
            labels = lut[labels]
        parameters = self.parameters() | {"working_factors_ijk": factors.tolist()}
        result_provenance = provenance(self.info(), parameters, started)
        result_provenance["notes"] = seg.notes
        report(1.0, "done")
        return EngineResult(labels, names, confidence, uncertainty, result_provenance)

    def _refine(self, original, labels, factors, lut, cancel, blood, spacing) -> np.ndarray:
        """Nearest-neighbour upsampling, then a voxel-wise decision on the original HU in boundary blocks;
        ``lut`` maps internal labels to output values; ``blood``: (lowest, highest) HU of each pool voxel's lumen."""
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
        low, high = (np.zeros(labels.shape, np.float32) for _ in range(2))  # of the brightest blood around
        if (labels == BLOOD).any():
            box = tuple(slice(max(0, int(w.min()) - 1), int(w.max()) + 2) for w in np.nonzero(labels == BLOOD))
            low[box], high[box] = (ndi.grey_dilation(limit[box], size=(3, 3, 3)) for limit in blood)
        k, j, i = np.nonzero(band)
        cavities, skeleton = [], []  # flat indices of the original voxels for bone_edges
        for start in range(0, len(k), 40_000):  # bounded memory: 40k working voxels at a time
            kp, jp, ip = k[start : start + 40_000], j[start : start + 40_000], i[start : start + 40_000]
            hu = hu_view[kp, :, jp, :, ip, :]
            own = labels[kp, jp, ip][:, None, None, None]
            bits = near[kp, jp, ip][:, None, None, None]
            inside_bone = np.zeros(hu.shape, bool)
            with_bone = np.nonzero((bits[:, 0, 0, 0] >> BONE) & 1)[0]
            inside_bone[with_bone] = occupancy(bone, kp[with_bone], jp[with_bone], ip[with_bone], (fk, fj, fi)) >= 0.5
            lumen = low[kp, jp, ip][:, None, None, None], high[kp, jp, ip][:, None, None, None]
            blood_like = has_label(bits, BLOOD) & (hu >= lumen[0]) & (hu <= lumen[1])
            decided = self._decide(hu, own, bits, inside_bone, blood_like)
            view[kp, :, jp, :, ip, :] = lut[decided]
            if len(with_bone):
                index = _flat_index(kp, jp, ip, (fk, fj, fi), out.shape)
                cavities.append(index[inside_bone & (decided != BONE) & (decided != BLOOD) & (hu >= self.fat_hu[0])])
                skeleton.append(index[decided == BONE])
        if lut[BONE] not in (0, lut[BODY]) and skeleton:
            cavities, skeleton = np.concatenate(cavities), np.concatenate(skeleton)
            bone_edges(out, original, cavities, skeleton, spacing, lut[BONE], lut[BODY], self.bone_hu)
            _plaque_apart(out, original, labels, near, high, (fk, fj, fi), lut)
        return out

    def _decide(self, hu, own, bits, inside_bone, blood_like) -> np.ndarray:
        """Per original voxel of a boundary block: the first label of its neighbourhood whose HU test passes;
        ``inside_bone``: the voxel lies inside the working-grid skeleton, linearly interpolated (marrow);
        ``blood_like``: blood is around and the voxel's HU is that of its lumen (not above: plaque, cortex)."""

        def has(value):
            return has_label(bits, value)

        air = hu < self.lung_hu
        own_air = (own == LUNG_L) | (own == LUNG_R) | (own == AIRWAY)
        bone = has(BONE) & (hu > np.where(inside_bone, self.marrow_hu, self.bone_hu)) & (hu < self.metal_hu)
        bone &= inside_bone | ~has(BLOOD)  # next to blood, bone stays within the working grid's (plaque is not)
        rules = (  # highest priority first; the block's own label when none applies
            (own_air & air, own),
            (has(AIRWAY) & air, AIRWAY),
            (has(LUNG_L) & air, LUNG_L),
            (has(LUNG_R) & air, LUNG_R),
            (bone & ~(blood_like & ~inside_bone), BONE),
            (blood_like, BLOOD),
            (has(FAT) & (hu >= self.fat_hu[0]) & (hu <= self.fat_hu[1]), FAT),
            (has(0) & (hu < self.body_hu), 0),
            ((bits > 1) & (hu >= self.body_hu), BODY),
        )
        decided = np.broadcast_to(own, hu.shape)
        for test, value in reversed(rules):  # lowest priority first, so that higher ones overwrite
            decided = np.where(test, value, decided)
        return decided.astype(np.uint8)


def _plaque_apart(out, original, labels, near, high, factors, lut) -> None:
    """Where bone meets blood (working grid): the original skeleton voxels brighter than the lumen that are not
    connected (26-neighbourhood, through such voxels) to those of the bone blocks away from blood, nor to the edge
    of the region looked at, are calcified plaque on the vessel wall; they and the skeleton voxels within two
    voxels of them (their partial volume) become body."""
    cube = np.ones((3, 3, 3), bool)
    contested = (labels == BONE) & has_label(near, BLOOD)
    if not contested.any():
        return
    anchored = (labels == BONE) & ~contested
    groups, _ = ndi.label(ndi.binary_dilation(contested, cube), cube)
    for box in ndi.find_objects(groups):
        fine = tuple(slice(b.start * f, b.stop * f) for b, f in zip(box, factors, strict=True))
        skeleton = out[fine] == lut[BONE]
        bright = skeleton & (original[fine] > float(high[box].max()))
        anchor = anchored[box]
        for axis, f in enumerate(factors):
            anchor = np.repeat(anchor, f, axis=axis)
        anchor &= bright
        for axis in range(3):  # what reaches the edge of the box may be held outside it
            edge = [slice(None)] * 3
            edge[axis] = [0, -1]
            anchor[tuple(edge)] |= bright[tuple(edge)]
        if not anchor.any():
            continue
        parts, _ = ndi.label(bright, cube)
        held = np.zeros(parts.max() + 1, bool)
        held[parts[anchor]] = True
        loose = bright & ~held[parts]
        if loose.any():
            loose = ndi.binary_dilation(loose, cube, iterations=2, mask=skeleton & ~(bright & held[parts]))
            out[fine][loose] = lut[BODY]


def _flat_index(k, j, i, factors, shape) -> np.ndarray:
    """(blocks, fk, fj, fi): the flat indices, in an array of ``shape``, of the original voxels of the working voxels
    (k, j, i)."""
    fk, fj, fi = factors
    kind = np.int32 if np.prod(shape) < 2**31 else np.int64  # half the memory on any CT
    corner = (((k * fk) * shape[1] + j * fj) * shape[2] + i * fi).astype(kind)
    offsets = (np.arange(fk)[:, None, None] * shape[1] + np.arange(fj)[None, :, None]) * shape[2] + np.arange(fi)
    return corner[:, None, None, None] + offsets.astype(kind)[None]


def has_label(bits, value):
    """Whether label ``value`` is among a block's neighbours (bit ``value`` of ``bits``)."""
    return (bits >> value) & 1 == 1


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
