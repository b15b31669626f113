"""Synthetic contrast-enhanced CTs for the CT engine's tests, seeded and reproducible.

``enhance`` turns a native CT with reference labels (TotalSegmentator names) into an arterial or portal-venous
one:

- each enhancing structure is raised to a typical HU for that phase (``PHASE_HU``), weighted by a
  partial-volume fraction: the label smoothed by a Gaussian of half a voxel, so edge voxels mix, as on a scanner;
- a smooth random inflow pattern of a few percent is added;
- the scan's own noise and texture stay, since CT noise does not depend on the contrast;
- calcified plaque (800-1400 HU spots of 1-2.5 mm, averaged over the grid's voxels) is put on the aorta's wall.

``thin_slices`` resamples a case to a finer grid and adds white noise (thin slices are noisier).
``sample_case`` makes ``example_ct_sm`` arterial or portal-venous, cached per process. The chest phantom, with a
heart and the aorta on the spine, is in ``chest_phantom``.

HU per phase (typical values of routine CT: late arterial about 35 s after injection, portal-venous about
70 s): the aorta and arteries 330 / 170, the heart 300 / 160, the pulmonary arteries 280 / 160, the superior
vena cava and brachiocephalic veins (injection side) 700 / 160, the portal and splenic vein 140 / 180, the
inferior vena cava 90 / 140, liver 65 / 105, spleen 120 / 120, kidneys (cortex, medulla) 200, 100 / 170, 170,
pancreas 110 / 100, muscle +5 / +10.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

PHASES = ("native", "arterial", "portal-venous")
# TotalSegmentator name (or prefix) -> (arterial HU, portal-venous HU); None: unchanged
PHASE_HU = {
    "aorta": (330, 170),
    "brachiocephalic_trunk": (330, 170),
    "subclavian_artery": (330, 170),
    "common_carotid_artery": (330, 170),
    "iliac_artery": (330, 170),
    "heart": (300, 160),
    "atrial_appendage_left": (330, 160),
    "pulmonary_artery": (280, 160),
    "pulmonary_vein": (330, 160),
    "superior_vena_cava": (700, 160),
    "brachiocephalic_vein": (700, 160),
    "portal_vein_and_splenic_vein": (140, 180),
    "inferior_vena_cava": (90, 140),
    "iliac_vena": (60, 130),
    "liver": (65, 105),
    "spleen": (120, 120),
    "kidney": ((200, 100), (170, 170)),  # (cortex, medulla)
    "pancreas": (110, 100),
}
MUSCLES = ("autochthon", "iliopsoas", "gluteus")


def target_hu(name: str, phase: str):
    """The enhanced HU of a TotalSegmentator structure in ``phase``, or None when it does not enhance."""
    if phase == "native":
        return None
    for key, values in PHASE_HU.items():
        if name == key or name.startswith(key + "_") or (key == "kidney" and name.startswith("kidney_")):
            if "cyst" in name:
                return None
            return values[PHASES.index(phase) - 1]
    return None


def noise_sigma(hu: np.ndarray, mask: np.ndarray) -> float:
    """The scan's noise in HU: the robust spread of neighbour differences along x inside ``mask`` (soft tissue),
    divided by sqrt(2); texture and edges barely move a median absolute deviation."""
    inside = mask[:, :, 1:] & mask[:, :, :-1]
    d = np.diff(hu.astype(np.float32), axis=2)[inside]
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))


def _fraction(mask: np.ndarray) -> np.ndarray:
    """Partial-volume fraction of a voxel label: smoothed by a Gaussian of half a voxel (sums are kept)."""
    return ndi.gaussian_filter(mask.astype(np.float32), 0.5)


def _inflow(shape, rng, spacing) -> np.ndarray:
    """A smooth random field of unit spread (20 mm correlation): mixing of enhanced and plain blood."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), [20.0 / s for s in spacing])
    return field / max(float(field.std()), 1e-6)


def enhance(hu, labels, names: dict[int, str], spacing, phase: str, seed: int = 0, plaques: int = 10):
    """(hu in ``phase``, plaque mask): ``hu`` (z, y, x) native with reference ``labels``; ``spacing`` in the same
    order (mm). Seeded: the same seed gives the same case."""
    if phase not in PHASES:
        raise ValueError(f"phase: expected one of {', '.join(PHASES)}, got {phase!r}")
    rng = np.random.default_rng(seed)
    out = hu.astype(np.float32).copy()
    plaque = np.zeros(hu.shape, bool)
    if phase == "native":
        return out, plaque
    inflow = _inflow(hu.shape, rng, spacing)
    for value, name in sorted(names.items()):
        mask = labels == value
        if not mask.any():
            continue
        if name.startswith(MUSCLES):
            out += (5.0 if phase == "arterial" else 10.0) * _fraction(mask)
            continue
        target = target_hu(name, phase)
        if target is None:
            continue
        base = float(np.median(hu[mask]))
        if isinstance(target, tuple):  # kidney: cortex (outer 5 mm) and medulla
            depth = ndi.distance_transform_edt(mask, sampling=spacing)
            cortex = mask & (depth <= 5.0)
            out += (target[0] - base) * _fraction(cortex) + (target[1] - base) * _fraction(mask & ~cortex)
            continue
        gain = (target - base) * (1.0 + 0.04 * inflow)
        out += gain * _fraction(mask)
    aorta = [v for v, n in names.items() if n == "aorta"]
    if aorta and plaques:
        plaque = _add_plaques(out, labels == aorta[0], spacing, rng, plaques)
    return out, plaque


def _add_plaques(out, vessel, spacing, rng, count) -> np.ndarray:
    """Calcified spots on the vessel's wall: each a ball of 1-2.5 mm at 800-1400 HU, averaged over the grid's
    voxels (8 x 8 x 8 sub-samples), added where it lies; returns the voxels it covers by >= 25 %."""
    wall = vessel & ~ndi.binary_erosion(vessel)
    points = np.argwhere(wall)
    plaque = np.zeros(out.shape, bool)
    if not len(points):
        return plaque
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    for index in rng.choice(len(points), size=min(count, len(points)), replace=False):
        centre = points[index] + rng.uniform(-0.5, 0.5, 3)
        radius, density = rng.uniform(1.0, 2.5), rng.uniform(800, 1400)
        reach = [int(np.ceil(radius / s)) + 1 for s in spacing]
        lo = [max(0, int(c) - r) for c, r in zip(centre, reach, strict=True)]
        hi = [min(n, int(c) + r + 1) for c, r, n in zip(centre, reach, out.shape, strict=True)]
        # per voxel (a, b, c) and sub-sample (d, e, f): offset from the centre in mm along each axis
        offsets = [
            ((np.arange(a, b)[:, None] + sub[None]) - c) * step
            for a, b, c, step in zip(lo, hi, centre, spacing, strict=True)
        ]
        gz = offsets[0][:, None, None, :, None, None]
        gy = offsets[1][None, :, None, None, :, None]
        gx = offsets[2][None, None, :, None, None, :]
        cover = ((gz**2 + gy**2 + gx**2) <= radius**2).mean(axis=(3, 4, 5)).astype(np.float32)
        region = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        out[region] = out[region] * (1 - cover) + density * cover
        plaque[region] |= cover >= 0.25
    return plaque


def thin_slices(hu, spacing, new_spacing, sigma: float, seed: int = 0):
    """``hu`` resampled (linear) to ``new_spacing`` over the same extent, plus white noise whose average over one
    original voxel has the spread ``sigma`` / 2 (``sigma``: the scan's noise), so a thin voxel is noisier than the
    original one by about the square root of how many it takes to fill it, as on a scanner."""
    factors = [s / n for s, n in zip(spacing, new_spacing, strict=True)]
    shape = [int(round(n * f)) for n, f in zip(hu.shape, factors, strict=True)]
    coords = [(np.arange(m) + 0.5) / f - 0.5 for m, f in zip(shape, factors, strict=True)]
    fine = ndi.map_coordinates(hu.astype(np.float32), np.meshgrid(*coords, indexing="ij"), order=1, mode="nearest")
    rng = np.random.default_rng(seed)
    fine += rng.normal(0.0, sigma * np.sqrt(np.prod(factors)) / 2, fine.shape).astype(np.float32)
    return fine


@functools.lru_cache(maxsize=8)
def sample_case(sample_dir: str, phase: str, seed: int = 0, plaques: int = 10):
    """``example_ct_sm`` in ``phase`` (a SimpleITK image, int16) with its reference labels and the plaque mask
    (arrays on the image's grid); cached per process."""
    import SimpleITK as sitk

    folder = Path(sample_dir)
    image = sitk.ReadImage(str(folder / "example_ct_sm.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "example_seg.nii.gz")))
    names = {int(k): v for k, v in json.loads((folder / "labels_total.json").read_text()).items()}
    spacing = image.GetSpacing()[::-1]
    hu, plaque = enhance(sitk.GetArrayFromImage(image), labels, names, spacing, phase, seed, plaques)
    out = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    out.CopyInformation(image)
    return out, labels, plaque
