"""Contrast phase of a CT from the image itself, and the blood cores it rests on (working grid, oriented S, P, L).

A blood core is what contrast-filled blood looks like at a few millimetres: voxels of 120-2500 HU, at least 4 mm
inside such a region (thick: heart chambers, aorta, venae cavae, portal vein; not the thin cortex), locally
homogeneous (the spread of their 3 x 3 x 3 neighbourhood at most 3 times the scan's noise; trabecular bone is
not), and not enclosed by brighter tissue: among the 8 in-plane directions, fewer than half meet a voxel brighter
than the core voxel (by 3 times the noise + 30 HU) before one darker than a quarter of the way down to soft tissue
(marrow inside its cortex is enclosed; the aorta on the spine meets bone on one side only). Cores are the
components of >= 0.2 ml of such voxels.

The phase follows from the enhancement E: the HU of the brightest core of >= 3 ml and <= 700 HU (the aorta, the
heart; small cores can be marrow pockets, undiluted contrast in the injected vein says nothing of the
phase) minus the soft tissue's (median of body voxels in [-30, 100] HU): native when there is no such core or E < 60 HU (blood 40-60 HU), arterial when E >= 170 (aorta about 250-450 HU), portal-venous in
between (aorta and portal vein about 130-200 HU). Confidence: 0.5 + 0.5 x (distance of E to the nearest of those
limits, over 50 HU, at most 1) x (volume of the large cores over 10 ml, at most 1); native without such cores:
1 - 0.5 x (volume of the small cores over 3 ml, at most 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .ct_grid import component_sizes

NATIVE, ARTERIAL, VENOUS = "native", "arterial", "portal-venous"
CORE_HU = (120.0, 2500.0)  # contrast-filled blood, from a weakly enhanced vein to undiluted contrast
PHASE_HU = 700.0  # cores above (undiluted contrast in the injected vein) say nothing of the phase
CORE_DEPTH_MM = 4.0
MIN_CORE_ML, PHASE_CORE_ML = 0.2, 3.0
# most a core's median texture may be, in units of the soft tissue's: 3 x 3 x 3 spread on a working grid that is
# the image's own; spread within the original voxels of each working voxel, and a looser 3 x 3 x 3 one, otherwise
COARSE_TEXTURE, FINE_TEXTURE, COARSE_TEXTURE_FINE = 1.8, 1.6, 2.2
CONTRAST_E, ARTERIAL_E = 60.0, 170.0  # enhancement limits (HU above soft tissue)
IN_PLANE = [(0, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass
class Phase:
    """The contrast phase and what it was read from; ``cores``: label map of the blood cores (0 elsewhere),
    ``levels``: median HU of each core by label value (index 0 unused)."""

    name: str
    confidence: float
    blood_hu: float | None
    soft_tissue_hu: float
    noise_hu: float
    cores_ml: float
    cores: np.ndarray = field(repr=False)
    levels: np.ndarray = field(repr=False)
    spacing: tuple = (1.0, 1.0, 1.0)

    @property
    def contrast(self) -> bool:
        return self.name != NATIVE

    def note(self) -> dict:
        return {
            "phase": self.name,
            "confidence": round(self.confidence, 3),
            "blood_hu": None if self.blood_hu is None else round(self.blood_hu, 1),
            "soft_tissue_hu": round(self.soft_tissue_hu, 1),
            "enhancement_hu": None if self.blood_hu is None else round(self.blood_hu - self.soft_tissue_hu, 1),
            "noise_hu": round(self.noise_hu, 1),
            "blood_cores_ml": round(self.cores_ml, 1),
        }


def local_spread(hu: np.ndarray) -> np.ndarray:
    """Standard deviation of each voxel's 3 x 3 x 3 neighbourhood."""
    mean = ndi.uniform_filter(hu, 3)
    square = ndi.uniform_filter(hu * hu, 3)
    return np.sqrt(np.maximum(square - mean * mean, 0.0))


def enclosed(hu, points, low, high, spacing, reach_mm: float = 20.0) -> np.ndarray:
    """For each voxel of ``points`` (n, 3): the fraction of the 8 in-plane directions in which, within
    ``reach_mm``, a voxel above ``high`` comes before one below ``low`` (per-point thresholds)."""
    shape = np.array(hu.shape)
    hits = np.zeros(len(points))
    for direction in IN_PLANE:
        step = np.asarray(direction)
        steps = int(reach_mm // float(np.linalg.norm(step * spacing)))
        alive = np.ones(len(points), bool)
        for s in range(1, steps + 1):
            q = points + s * step
            inside = np.all((q >= 0) & (q < shape), axis=1)
            values = np.full(len(points), -1000.0, np.float32)
            values[inside] = hu[tuple(q[inside].T)]
            brighter = alive & (values > high)
            hits += brighter
            alive &= ~brighter & (values >= low)
            if not alive.any():
                break
    return hits / len(IN_PLANE)


def blood_cores(hu, body, spacing, spread, soft_hu, noise, fine=None):
    """(label map of the blood cores, their median HU by label, their volumes in ml by label)."""
    candidate = body & (hu >= CORE_HU[0]) & (hu <= CORE_HU[1])
    deep = ndi.distance_transform_edt(candidate, sampling=spacing) >= CORE_DEPTH_MM
    core = candidate & deep & (spread <= max(3.0 * noise, 25.0))
    points = np.argwhere(core)
    if len(points):
        values = hu[core]
        low = soft_hu + 0.25 * (values - soft_hu)
        high = values + max(3.0 * noise, 30.0) + 30.0
        core[tuple(points[enclosed(hu, points, low, high, spacing) >= 0.5].T)] = False
    cores, count = ndi.label(core, np.ones((3, 3, 3), bool))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    keep = component_sizes(cores) * voxel_ml >= MIN_CORE_ML
    keep[0] = False
    if count and keep.any():  # homogeneous as blood: texture of marrow is not
        index = np.arange(1, count + 1)
        flat = ndi.median(spread, cores, index) / max(noise, 1.0)
        if fine is not None and fine.finer:
            sample = np.argwhere(ndi.binary_erosion(body & (hu > -30) & (hu < 130)))
            sample = sample[:: max(1, len(sample) // 20_000)]
            fine_noise = max(float(np.median(fine.spread(sample))), 1.0) if len(sample) else 1.0
            texture = np.zeros(cores.shape, np.float32)
            texture[cores > 0] = fine.spread(np.argwhere(cores > 0)) / fine_noise
            keep[1:] &= (ndi.median(texture, cores, index) <= FINE_TEXTURE) & (flat <= COARSE_TEXTURE_FINE)
        else:
            keep[1:] &= flat <= COARSE_TEXTURE
    cores, count = ndi.label(keep[cores], np.ones((3, 3, 3), bool))
    levels = np.zeros(count + 1, np.float32)
    if count:
        levels[1:] = ndi.median(hu, cores, np.arange(1, count + 1))
    return cores, levels, component_sizes(cores) * voxel_ml


def detect_phase(hu, body, spacing, fine=None) -> Phase:
    """The phase of the working grid ``hu`` inside ``body``; ``fine``: the original voxels (FineBlocks), for the
    texture test when the image is finer than the working grid (see the module docstring)."""
    spacing = np.asarray(spacing, float)
    spread = local_spread(hu)
    soft = body & (hu > -30) & (hu < 100)
    soft_hu = float(np.median(hu[soft])) if soft.any() else 40.0
    calm = ndi.binary_erosion(body & (hu > -30) & (hu < 130))
    noise = float(np.median(spread[calm])) if calm.any() else 15.0
    cores, levels, volumes = blood_cores(hu, body, spacing, spread, soft_hu, noise, fine)
    large = np.nonzero((volumes >= PHASE_CORE_ML) & (levels <= PHASE_HU))[0]
    large = large[large > 0]
    blood = float(levels[large].max()) if len(large) else None
    enhancement = None if blood is None else blood - soft_hu
    if enhancement is None or enhancement < CONTRAST_E:
        name = NATIVE
        confidence = 1.0 - 0.5 * min(1.0, float(volumes[1:].sum()) / 3.0)
        if enhancement is not None:
            confidence = 0.5 + 0.5 * min(1.0, (CONTRAST_E - enhancement) / 50.0)
        cores = np.zeros_like(cores)
    else:
        name = ARTERIAL if enhancement >= ARTERIAL_E else VENOUS
        distance = min(abs(enhancement - CONTRAST_E), abs(enhancement - ARTERIAL_E))
        confidence = 0.5 + 0.5 * min(1.0, distance / 50.0) * min(1.0, float(volumes[large].sum()) / 10.0)
    return Phase(name, confidence, blood, soft_hu, noise, float(volumes[1:].sum()), cores, levels, tuple(spacing))
