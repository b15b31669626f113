"""The CT engine's steps on the working grid (oriented S, P, L): body, lungs, airways, left and right, contrast
phase and blood pool, skeleton, subcutaneous fat, and the confidence of each structure (method:
docs/presegmentation.md)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..jobs import check_cancel
from .base import EngineError
from .ct_bone import discs, fill_cavities
from .ct_grid import CROSS, FLAT, component_sizes, convex_hull_slices, disk, fill_slices, padded
from .ct_phase import detect_phase
from .ct_structures import AIRWAY, BLOOD, BODY, BONE, FAT, LUNG_L, LUNG_R, STRUCTURES
from .ct_vessels import blood_pool, drop_enhanced, drop_plaque


class Segmenter:
    """The steps on the working grid, oriented (S, P, L); ``notes`` records what was found or not."""

    def __init__(self, engine, hu, spacing, report, cancel, fine=None):
        self.e, self.hu, self.spacing, self.fine = engine, hu, np.asarray(spacing, float), fine
        self.voxel_ml = float(np.prod(self.spacing)) / 1000.0
        self.report, self.cancel = report, cancel
        self.notes: dict = {}
        self.lung_split = "components"
        self.phase = None
        self.pool = None

    def step(self, fraction: float, message: str) -> None:
        check_cancel(self.cancel, "CT pre-segmentation")
        self.report(fraction, message)

    def run(self, wanted) -> np.ndarray:
        """Internal labels (BODY ... BLOOD); structures not in ``wanted`` are skipped where nothing needs them (the
        contrast phase is always read: provenance reports it)."""
        self.step(0.1, "body")
        body, torso = self.body()
        labels = body.astype(np.uint8)
        if {"lung_left", "lung_right", "airways"} & set(wanted):
            self.step(0.3, "lungs and airways")
            lung_air = self.lung_air(body & (self.hu < self.e.lung_hu))
            airways = self.airways(body, lung_air)
            self.step(0.45, "left and right lung")
            left, right = self.split_lungs(lung_air & ~ndi.binary_dilation(airways, CROSS), torso)
        if "subcutaneous_fat" in wanted:
            self.step(0.55, "subcutaneous fat")
            labels[self.fat(body, torso)] = FAT
        self.step(0.62, "contrast phase and blood pool")
        self.phase = detect_phase(self.hu, body, self.spacing, self.fine)
        self.notes["contrast"] = self.phase.note()
        self.pool = blood_pool(self.hu, body, self.phase, self.fine)
        labels[self.pool.vessels] = BLOOD  # also when not wanted: the full-resolution decision needs it
        if "skeleton" in wanted:
            self.step(0.7, "skeleton")
            labels[self.skeleton(body, self.pool)] = BONE
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
        opening = disk(4.0, self.spacing)
        components, _ = ndi.label(padded(ndi.binary_opening, tissue, opening))
        sizes = component_sizes(components)
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
        body_tissue = tissue & ndi.binary_dilation(kept, opening)
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
        ring = ndi.binary_dilation(part, CROSS) & ~part
        return np.mean(body_tissue[ring]) >= 0.6

    # -- lungs and airways --------------------------------------------------------------------------------
    def lung_air(self, air) -> np.ndarray:
        """The air components that look like lung: big enough, mostly not pure air."""
        components, _ = ndi.label(air)
        sizes = component_sizes(components)
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
        candidates, n = ndi.label(body & (hu < self.e.airway_hu), FLAT)
        if n == 0 or not lung.any():
            return np.zeros(hu.shape, bool)
        area = component_sizes(candidates) * sp[1] * sp[2] / 100.0  # cm2
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
        ring = ndi.binary_dilation(chosen, FLAT) & ~chosen
        owner = ndi.grey_dilation(np.where(chosen, candidates, 0), footprint=FLAT)
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
        sizes = component_sizes(components)
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
            eroded = ndi.binary_erosion(eroded, CROSS)
            pieces, n = ndi.label(eroded)
            if n < 2:
                continue
            sizes = component_sizes(pieces)
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
    def skeleton(self, body, pool) -> np.ndarray:
        """Cortex (> bone_hu) closed, with its cavities of marrow (ct_bone); marrow (> marrow_hu) where a closing of
        9 mm encloses it in an axial or sagittal hole of at most 25 cm2 (vertebral bodies, not the thorax); without
        the discs (ct_bone), metal and small bits; all outside the blood ``pool``; on a contrast CT without plaque
        near it and enhanced parenchyma (ct_vessels)."""
        hu, e, sp = self.hu, self.e, self.spacing
        metal = ndi.binary_dilation(hu > e.metal_hu, CROSS)
        cortex = padded(ndi.binary_closing, body & (hu > e.bone_hu) & ~metal & ~pool.mask, CROSS)
        small = int(2500.0 / (sp[1] * sp[2]))
        envelope = fill_slices(padded(ndi.binary_closing, cortex, disk(9.0, sp)), small)
        envelope = np.moveaxis(fill_slices(np.moveaxis(envelope, 2, 0), int(2500.0 / (sp[0] * sp[1]))), 0, 2)
        bone = (fill_cavities(cortex, hu, sp, small, e.fat_hu[1]) | (envelope & (hu > e.marrow_hu))) & body
        bone &= ~metal & ~pool.mask
        bone &= ~discs(bone, hu, sp, e.bone_hu)
        components, _ = ndi.label(bone)
        keep = component_sizes(components) * self.voxel_ml >= 0.1
        keep[0] = False
        bone = keep[components]
        if self.phase.contrast:
            bone, plaque = drop_plaque(bone, pool.vessels, sp)
            bone, enhanced = drop_enhanced(bone, hu, self.voxel_ml)
            self.notes["contrast"] |= {"plaque_ml": round(plaque, 2), "enhanced_ml": round(enhanced, 2)}
        return bone

    def fat(self, body, torso) -> np.ndarray:
        """Fat outside the muscle wall. Wall: tissue (> fat_hu[1]) deeper than 5 mm under the skin, opened by
        3 mm; inside it: its holes after a 10 mm closing, in each axial slice; where that misses more than 30 %
        of the wall's convex hull (the wall is open), the torso's hull; then closed by 6 mm along z."""
        hu, e, sp = self.hu, self.e, self.spacing
        fat = body & (hu >= e.fat_hu[0]) & (hu <= e.fat_hu[1])
        deep = ~padded(ndi.binary_dilation, ~body, disk(5.0, sp))
        wall = padded(ndi.binary_opening, deep & (hu > e.fat_hu[1]), disk(3.0, sp))
        inner = fill_slices(padded(ndi.binary_closing, wall, disk(10.0, sp)))
        hull = convex_hull_slices(wall & torso, sp)
        open_wall = inner.sum(axis=(1, 2)) < 0.7 * hull.sum(axis=(1, 2))
        inner[open_wall] |= hull[open_wall]
        reach = max(1, int(round(6.0 / sp[0])))
        inner = padded(ndi.binary_closing, inner, np.ones((2 * reach + 1, 1, 1), bool))
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
            edge = mask & ~ndi.binary_erosion(mask, CROSS)
            values = hu[edge]
            if not len(values):
                confidence[structure.id] = 0.0
                continue
            if value == BLOOD:  # the lumen's edge
                limits = [self.pool.low[edge]]
            else:
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
