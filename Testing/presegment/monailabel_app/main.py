"""A minimal MONAI Label app for the MONAI Label engine's tests: real server, deterministic "models".

Started by the tests with ``monailabel start_server --app Testing/presegment/monailabel_app --studies DIR``.
Its infer tasks need no weights: they threshold the uploaded CT in Hounsfield units, so the tests can
compute the expected labelmap themselves.

- ``threshold``: 1 "liver" for 0 < HU <= 150, 2 "left kidney" for 150 < HU <= 300, 3 "bright stuff" above
- ``mismatch``: declares only {"liver": 1} but also writes 2 where HU > 300 (a wrong label list)
- ``refuses``: answers 422 with a message, as an app validating its input does
- ``crashes``: raises, so the server answers 500
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import SimpleITK as sitk
from fastapi import HTTPException
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType


def threshold(hu: np.ndarray, bands: list[tuple[float, float, int]]) -> np.ndarray:
    labels = np.zeros(hu.shape, np.uint8)
    for low, high, value in bands:
        labels[(hu > low) & (hu <= high)] = value
    return labels


class ThresholdInfer(InferTask):
    """Labels intensity bands of the input image and writes a NIfTI labelmap on the same grid."""

    def __init__(self, labels: dict, bands: list[tuple[float, float, int]], description: str):
        super().__init__(type=InferType.SEGMENTATION, labels=labels, dimension=3, description=description)
        self.bands = bands

    def is_valid(self) -> bool:
        return True

    def __call__(self, request):
        image = sitk.ReadImage(request["image"])
        labels = threshold(sitk.GetArrayFromImage(image).astype(np.float64), self.bands)
        out = sitk.GetImageFromArray(labels)
        out.CopyInformation(image)
        handle, path = tempfile.mkstemp(suffix=".nii.gz")
        os.close(handle)
        sitk.WriteImage(out, path)
        return path, {"label_names": self.labels, "bands": self.bands}


class RefusingInfer(ThresholdInfer):
    def __call__(self, request):
        raise HTTPException(status_code=422, detail="threshold model: the image has no body voxels")


class CrashingInfer(ThresholdInfer):
    def __call__(self, request):
        raise RuntimeError("the model crashed")


class ThresholdApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        super().__init__(app_dir, studies, conf, name="threshold-test-app", description="Deterministic test app")

    def init_infers(self):
        bands = [(0, 150, 1), (150, 300, 2), (300, 1e9, 3)]
        labels = {"liver": 1, "Left Kidney": 2, "bright stuff": 3}
        return {
            "threshold": ThresholdInfer(labels, bands, "Intensity bands of the CT"),
            "mismatch": ThresholdInfer({"liver": 1}, [(0, 150, 1), (300, 1e9, 2)], "Wrong label list"),
            "refuses": RefusingInfer(labels, bands, "Always refuses"),
            "crashes": CrashingInfer(labels, bands, "Always crashes"),
        }

    def init_trainers(self):
        return {}

    def init_strategies(self):
        return {}
