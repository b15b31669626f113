"""Interactive seeds engine: grow every structure from the expert's seed strokes, for any structure.

In Slicer (and on slicer-core) ``mrml.presegment.growFromSeeds`` uses Slicer's own
``vtkImageGrowCutSegment``, the algorithm behind the Segment Editor's "Grow from seeds". This core
fallback, for the server and the command line, is a marker-controlled watershed (scikit-image) on the
gradient magnitude of the lightly smoothed image, computed only in the seeds' bounding box plus a
margin; the box border counts as background when no background strokes are given.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from ..jobs import check_cancel
from ..protocol import Code
from .base import Engine, EngineError, EngineInfo, EngineResult, Prompts, anatomy, check_image, provenance

VERSION = "1.0.0"


class SeedsEngine(Engine):
    """Grow-from-seeds for structures named by the caller (any protocol structure id)."""

    name = "seeds"

    def __init__(self, margin_mm: float = 15.0, smoothing_mm: float = 1.0):
        self.margin_mm = float(margin_mm)
        self.smoothing_mm = float(smoothing_mm)

    @classmethod
    def probe(cls) -> tuple[bool, str]:
        try:
            import skimage
        except ImportError:
            return False, "needs scikit-image: pip install scikit-image"
        return True, f"built in (scikit-image {skimage.__version__})"

    def info(self) -> EngineInfo:
        return EngineInfo(
            self.name,
            VERSION,
            "Grows each structure from the expert's seed strokes (watershed on the image gradient)",
            "any",
            (anatomy("seeded", "Seeded structure", "#ffcc00", Code("SCT", "91723000", "Anatomical structure")),),
            interactive=True,
            requirements=("scikit-image>=0.22",),
        )

    def wanted(self, structures: Sequence[str] | None) -> list[str]:
        return list(structures or [])

    def run(self, image, structures=None, prompts: Prompts | None = None, progress=None, cancel=None) -> EngineResult:
        import SimpleITK as sitk
        from skimage.segmentation import watershed

        started = time.time()
        check_image(image, "any", self.name)
        if prompts is None or not prompts.seeds:
            raise EngineError("prompts: the seeds engine needs at least one structure's seed strokes")
        names = list(structures or prompts.seeds)
        for name in names:
            seeds = prompts.seeds.get(name)
            if seeds is None or len(seeds) == 0:
                raise EngineError(f"prompts.seeds.{name}: no seed voxels for this structure")
        shape = image.GetSize()[::-1]
        spacing = np.array(image.GetSpacing()[::-1])
        margin = np.ceil(self.margin_mm / spacing).astype(int)
        points = np.concatenate([np.asarray(prompts.seeds[n], int).reshape(-1, 3) for n in names])
        if np.any(points < 0) or np.any(points >= shape):
            raise EngineError(f"prompts.seeds: seed voxels outside the image of size {shape} (k, j, i)")
        low = np.maximum(points.min(axis=0) - margin, 0)
        high = np.minimum(points.max(axis=0) + margin + 1, shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))
        if progress:
            progress(0.1, "smoothing")
        crop = sitk.RegionOfInterest(
            image, [int(s.stop - s.start) for s in box[::-1]], [int(s.start) for s in box[::-1]]
        )
        crop = sitk.Cast(crop, sitk.sitkFloat32)
        gradient = sitk.GradientMagnitudeRecursiveGaussian(crop, sigma=self.smoothing_mm)
        check_cancel(cancel, "growing from seeds")
        markers = np.zeros(tuple(s.stop - s.start for s in box), np.int32)
        background = len(names) + 1
        if prompts.background is not None and len(prompts.background):
            local = np.asarray(prompts.background, int).reshape(-1, 3) - low
            inside = np.all((local >= 0) & (local < markers.shape), axis=1)
            markers[tuple(local[inside].T)] = background
        else:  # the box border is background
            border = np.ones(markers.shape, bool)
            border[tuple(slice(1, -1) for _ in markers.shape)] = False
            markers[border] = background
        for value, name in enumerate(names, start=1):
            local = np.asarray(prompts.seeds[name], int).reshape(-1, 3) - low
            markers[tuple(local.T)] = value
        if progress:
            progress(0.4, "growing")
        grown = watershed(sitk.GetArrayViewFromImage(gradient), markers)
        grown[grown == background] = 0
        labels = np.zeros(shape, np.uint8 if len(names) < 255 else np.uint16)
        labels[box] = grown
        if progress:
            progress(1.0, "done")
        confidence = {name: 1.0 for name in names}  # the expert placed the seeds
        parameters = {"margin_mm": self.margin_mm, "smoothing_mm": self.smoothing_mm, "seeds": len(points)}
        return EngineResult(
            labels, dict(enumerate(names, start=1)), confidence, 0.0, provenance(self.info(), parameters, started)
        )
