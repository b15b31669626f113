"""Contrast phase of a CT from the image itself, and the blood cores it rests on (working grid, oriented S, P, L).

A blood core is what contrast-filled blood looks like at a few millimetres:

- voxels of 120-2500 HU at least 4 mm inside such a region: thick (heart chambers, aorta, venae cavae, portal
  vein), not the thin cortex;
- locally homogeneous: the spread of the 3 x 3 x 3 neighbourhood at most 3 times the scan's noise (the median
  spread in calm soft tissue);
- not enclosed by brighter tissue: among the 8 in-plane directions, fewer than half meet a voxel brighter than
  the core voxel (by max(3 x noise, 30 HU) + 30 HU) before one darker than a quarter of the way down to soft tissue
  (marrow inside its cortex is enclosed; the aorta on the spine meets bone on one side only);
- in components of >= 0.2 ml whose median texture is that of blood, not of marrow: the median 3 x 3 x 3 spread
  at most 1.8 times the noise when the working grid is the image's own; when the image is finer, the median
  spread of the original voxels within each working voxel at most 1.6 times that of soft tissue (and the 3 x 3
  x 3 one at most 2.2);
- components under 2 ml with at most 35 % of the voxels 2-3 voxels around them as bright as their lumen's edge
  (half-way from the median of the darker ones to their HU): a pocket of marrow sits amid bone as bright;
- components above 700 HU (undiluted contrast) within 4 voxels of a core of ordinary HU: the injected vein
  drains into the heart, dense bone (the petrous bone) lies apart from blood.

The phase follows from the enhancement E: the HU of the brightest core of >= 3 ml and <= 700 HU (the aorta, the
heart; undiluted contrast in the injected vein says nothing of the phase) minus the soft tissue's (median of body
voxels in [-30, 100] HU). Native when there is no such core or E < 60 HU (blood 40-60 HU), arterial when
E >= 170 (aorta about 250-450 HU), portal-venous in between (aorta and portal vein about 130-200 HU).

Confidence: 0.5 + 0.5 x min(1, distance of E to the nearest of those limits / 50 HU) x min(1, volume of the
large cores / 10 ml); native without such cores: 1 - 0.5 x min(1, volume of the small cores / 3 ml).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .ct_grid import component_sizes, dilate_labels, label_medians

NATIVE, ARTERIAL, VENOUS = "native", "arterial", "portal-venous"
CORE_HU = (120.0, 2500.0)  # contrast-filled blood, from a weakly enhanced vein to undiluted contrast
PHASE_HU = 700.0  # cores above (undiluted contrast in the injected vein) say nothing of the phase
CORE_DEPTH_MM = 4.0
MIN_CORE_ML, PHASE_CORE_ML = 0.2, 3.0
# most a core's median texture may be, in units of the soft tissue's: 3 x 3 x 3 spread on a working grid that is
# the image's own; spread within the original voxels of each working voxel, and a looser 3 x 3 x 3 one, otherwise
COARSE_TEXTURE, FINE_TEXTURE, COARSE_TEXTURE_FINE = 1.8, 1.6, 2.2
# a core under SMALL_CORE_ML has at most SURROUNDED of the voxels 2-3 voxels around it as bright as its lumen's edge
# (half-way from the median of the darker ones to its HU): the aorta on the spine 0.3, marrow pockets 0.4 or more
SMALL_CORE_ML, SURROUNDED = 2.0, 0.35
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
    fine_noise: float | None = None  # spread of the original voxels within a working voxel of soft tissue

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


def ball(radius_mm: float, spacing) -> np.ndarray:
    """The voxel offsets closer than ``radius_mm`` to the centre (an ellipsoid in voxels for ``spacing``)."""
    reach = [int(np.ceil(radius_mm / s)) for s in spacing]
    grid = np.meshgrid(*(np.arange(-r, r + 1) * s for r, s in zip(reach, spacing, strict=True)), indexing="ij")
    return sum(g**2 for g in grid) < radius_mm**2


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


def fine_noise(calm, fine) -> float | None:
    """The median spread of the original voxels within the working voxels of ``calm`` soft tissue; None when the
    working grid is the image's own."""
    if fine is None or not fine.finer:
        return None
    sample = np.argwhere(calm)
    sample = sample[:: max(1, len(sample) // 20_000)]
    return max(float(np.median(fine.spread(sample))), 1.0) if len(sample) else None


def blood_cores(hu, body, spacing, spread, soft_hu, noise, fine=None, fine_spread=None):
    """(label map of the blood cores, their median HU by label, their volumes in ml by label)."""
    candidate = body & (hu >= CORE_HU[0]) & (hu <= CORE_HU[1])
    deep = ndi.binary_erosion(candidate, ball(CORE_DEPTH_MM, spacing), border_value=1)  # nothing else within 4 mm
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
        flat = label_medians(spread, cores, count)[1:] / max(noise, 1.0)
        if fine_spread is not None:
            texture = np.zeros(cores.shape, np.float32)
            texture[cores > 0] = fine.spread(np.argwhere(cores > 0)) / fine_spread
            keep[1:] &= (label_medians(texture, cores, count)[1:] <= FINE_TEXTURE) & (flat <= COARSE_TEXTURE_FINE)
        else:
            keep[1:] &= flat <= COARSE_TEXTURE
        small = keep & (component_sizes(cores) * voxel_ml < SMALL_CORE_ML)
        if small.any():  # a small core amid tissue as bright as its lumen is a pocket of marrow, not a vessel
            seeds = np.where(small[cores], cores, 0)
            ring = dilate_labels(seeds, 3)  # 2-3 voxels around each small core
            ring[dilate_labels(seeds, 1) > 0] = 0
            inside = ring > 0
            level = np.zeros(count + 1, np.float32)
            level[1:] = label_medians(hu, cores, count)[1:]
            darker = inside & (hu < level[ring] - max(3.0 * noise, 30.0))
            background = np.full(count + 1, soft_hu, np.float32)
            present = np.unique(ring[darker])
            if len(present):
                background[present] = label_medians(hu, np.where(darker, ring, 0), count)[present]
            edge = background + 0.5 * (level - background)
            bright = np.bincount(ring[inside], weights=hu[inside] >= edge[ring[inside]], minlength=count + 1)
            keep &= ~small | (bright <= SURROUNDED * np.maximum(np.bincount(ring[inside], minlength=count + 1), 1))
    cores, count = ndi.label(keep[cores], np.ones((3, 3, 3), bool))
    levels = np.zeros(count + 1, np.float32)
    if count:
        levels[1:] = label_medians(hu, cores, count)[1:]
    dense = levels > PHASE_HU
    if dense.any():  # undiluted contrast flows into blood of ordinary HU; dense bone (the petrous bone) does not
        reach = dilate_labels(np.where(dense[cores], cores, 0), 4)
        joined = np.unique(reach[(cores > 0) & ~dense[cores]])
        dense[joined] = False
        cores = np.where(dense[cores], 0, cores)
    return cores, levels, component_sizes(cores)[: count + 1] * voxel_ml


def detect_phase(hu, body, spacing, fine=None) -> Phase:
    """The phase of the working grid ``hu`` inside ``body``; ``fine``: the original voxels (FineBlocks), for the
    texture test when the image is finer than the working grid (see the module docstring)."""
    spacing = np.asarray(spacing, float)
    spread = local_spread(hu)
    soft = body & (hu > -30) & (hu < 100)
    soft_hu = float(np.median(hu[soft])) if soft.any() else 40.0
    calm = ndi.binary_erosion(body & (hu > -30) & (hu < 130))
    noise = float(np.median(spread[calm])) if calm.any() else 15.0
    fine_spread = fine_noise(calm, fine)
    cores, levels, volumes = blood_cores(hu, body, spacing, spread, soft_hu, noise, fine, fine_spread)
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
    cores_ml = float(volumes[1:].sum())
    return Phase(name, confidence, blood, soft_hu, noise, cores_ml, cores, levels, tuple(spacing), fine_spread)
