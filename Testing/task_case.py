"""A reading task on the real sample CT for task-session and workflow tests: a protocol holding both lungs
(the CT engine proposes them), the liver (the case's AI pre-segmentation proposes it: TotalSegmentator's
real liver from example_seg) and the Lung-RADS question; and that AI file, written as the server stores it."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from MedAnnotAssistLib.core import provenance as prov
from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd
from MedAnnotAssistLib.core.protocol import Protocol, bundled_protocol, validate_protocol_data

TOTALSEG_LIVER = 5
AI_PROVENANCE = {
    "engine": "totalsegmentator",
    "version": "2.18.0",
    "parameters": {"task": "total"},
    "started": "2026-01-05T09:00:00+00:00",
}


def chest_protocol() -> Protocol:
    """lung-nodule (lungs, optional nodule, Lung-RADS and nodule-type questions) plus abdominal-organs' liver
    (its laterality judged against the image centre: this protocol has no aorta)."""
    data = copy.deepcopy(bundled_protocol("lung-nodule").raw)
    liver = copy.deepcopy(next(s for s in bundled_protocol("abdominal-organs").raw["structures"] if s["id"] == "liver"))
    liver["rules"]["laterality"].pop("midline")
    data.update(id="chest-screening-test", title="Lungs and liver (test)")
    data["structures"].append(liver)
    problems = validate_protocol_data(data, "chest_protocol")
    assert not problems, problems
    return Protocol.from_json(data, "chest_protocol")


def write_ai_liver(path: Path, sample_dir: Path, protocol: Protocol) -> tuple[Path, np.ndarray]:
    """The case's AI pre-segmentation: the real liver of example_seg with TotalSegmentator's provenance, every
    other protocol structure empty and untagged (as ``medannot presegment --protocol`` writes it)."""
    import SimpleITK as sitk

    reference = sitk.ReadImage(str(sample_dir / "example_seg.nii.gz"))
    liver = sitk.GetArrayFromImage(reference) == TOTALSEG_LIVER
    segments = [(value, s) for value, s in enumerate(protocol.structures, start=1) if s.kind == "segment"]
    labels = np.where(liver, next(v for v, s in segments if s.id == "liver"), 0).astype(np.uint8)
    tags = {"liver": prov.provenance_tags(AI_PROVENANCE, 0.93)}
    write_seg_nrrd(path, labels, Geometry.of(reference), segments, protocol, segment_tags=tags)
    return path, liver
