"""The two real readers of one CT: TotalSegmentator's full-resolution model (example_seg) and its fast
model (example_seg_fast), both on example_ct_sm's grid, with the label values of labels_total.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

# TotalSegmentator label value -> abdominal-organs structure id
ABDOMEN_LABELS = {
    5: "liver",
    1: "spleen",
    3: "kidney_left",
    2: "kidney_right",
    7: "pancreas",
    4: "gallbladder",
    6: "stomach",
    52: "aorta",
    63: "inferior_vena_cava",
    64: "portal_vein",
    9: "adrenal_gland_left",
    8: "adrenal_gland_right",
    19: "duodenum",
}


@pytest.fixture(scope="session")
def real_readers(sample_dir):
    """(full labels, fast labels, spacing in array order, SimpleITK image of the full labels)."""
    import SimpleITK as sitk

    full = sitk.ReadImage(str(sample_dir / "example_seg.nii.gz"))
    fast = sitk.ReadImage(str(sample_dir / "example_seg_fast.nii.gz"))
    return sitk.GetArrayFromImage(full), sitk.GetArrayFromImage(fast), full.GetSpacing()[::-1], full


@pytest.fixture(scope="session")
def labels_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("labels") / "abdomen-labels.json"
    path.write_text(json.dumps({str(k): v for k, v in ABDOMEN_LABELS.items()}))
    return path


@pytest.fixture(scope="session")
def liver_truth(real_readers) -> np.ndarray:
    return real_readers[0] == 5
