"""`medannot consensus` as a user runs it: Slicer .seg.nrrd readers in, four files out, errors on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from ..readers import ABDOMEN_LABELS

MEDANNOT = [str(Path(sys.executable).parent / "medannot")]


def run(*args):
    return subprocess.run([*MEDANNOT, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def seg_readers(sample_dir, tmp_path_factory):
    """The two real readers as Slicer segmentations, written by `medannot prepare` (slicer-core)."""
    root = tmp_path_factory.mktemp("readers")
    labels = root / "labels.json"
    labels.write_text(json.dumps({str(k): v for k, v in ABDOMEN_LABELS.items()}))
    files = []
    for name in ("example_seg", "example_seg_fast"):
        out = root / name
        result = run(
            "prepare", sample_dir / "example_ct_sm.nii.gz", "--protocol", "abdominal-organs", "--out", out,
            "--labels", sample_dir / f"{name}.nii.gz", "--labels-json", labels, "--name", name,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        files.append(out / f"{name}.seg.nrrd")
    return files


def test_consensus_of_two_slicer_segmentations(seg_readers, sample_dir, tmp_path):
    result = run(
        "consensus", *seg_readers, "--protocol", "abdominal-organs", "--out", tmp_path,
        "--readers-names", "full,fast", "--image", sample_dir / "example_ct_sm.nii.gz",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Liver" in result.stdout and "worst Dice 0.981 (full vs fast)" in result.stdout
    for name in ("consensus.seg.nrrd", "disagreement.nrrd", "agreement.json", "report.html"):
        assert f"wrote {tmp_path / name}" in result.stdout
    agreement = json.loads((tmp_path / "agreement.json").read_text())
    assert agreement["readers"][0]["name"] == "full"
    # prepare gave each reader every protocol segment: the two nobody drew are agreed absent.
    sma = agreement["structures"]["Superior mesenteric artery"]
    assert sma["verdict"] == "agreed" and sma["pairwise"][0]["dice"] == 1.0
    assert agreement["structures"]["Liver"]["pairwise"][0]["dice"] == pytest.approx(0.98136, abs=1e-5)


def test_consensus_segmentation_opens_in_slicer_with_protocol_segments(seg_readers, tmp_path):
    from MedAnnotAssistLib.core.protocol import bundled_protocol
    from MedAnnotAssistLib.mrml.protocol_segments import checkSegmentation, structureSegments
    from MedAnnotAssistLib.mrml.scene import SceneContext
    from MedAnnotAssistLib.mrml.segmentation import getTag, loadSegmentation, segmentMasks

    assert run("consensus", *seg_readers, "--protocol", "abdominal-organs", "--out", tmp_path).returncode == 0
    protocol = bundled_protocol("abdominal-organs")
    node = loadSegmentation(SceneContext.headless(), tmp_path / "consensus.seg.nrrd")
    segments = structureSegments(node, protocol)
    assert len(segments) == len(protocol.structures)
    liver = node.GetSegmentation().GetSegment(segments["liver"])
    assert liver.GetName() == "Liver"
    assert "10200004" in getTag(liver, "TerminologyEntry")  # SNOMED CT code of the liver
    assert getTag(liver, "MedAnnotAssist.ProtocolChecksum") == protocol.checksum
    masks, _ = segmentMasks(node, [segments["liver"]])
    assert 37_000 < masks[segments["liver"]].sum() < 39_000
    check = checkSegmentation(node, protocol, updateStatus=False)
    assert check.structure("liver").state == "complete"


def test_readers_on_different_grids_are_refused_with_both_files_named(sample_dir, real_readers, tmp_path):
    full, _, _, image = real_readers
    other = sitk.GetImageFromArray(full[:, :, :-1])
    other.SetSpacing(image.GetSpacing())
    sitk.WriteImage(other, str(tmp_path / "cropped.nii.gz"))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"5": "liver"}))
    result = run(
        "consensus", sample_dir / "example_seg.nii.gz", tmp_path / "cropped.nii.gz",
        "--protocol", "abdominal-organs", "--labels-json", labels, "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.returncode == 2
    assert "not on one image grid" in result.stderr and "cropped.nii.gz: size 121 x 101 x 30" in result.stderr
    assert "example_seg.nii.gz" in result.stderr
    assert not (tmp_path / "out").exists()


def test_labelmap_without_label_names_is_refused(sample_dir, tmp_path):
    result = run("consensus", sample_dir / "example_seg.nii.gz", "--protocol", "abdominal-organs", "--out", tmp_path)
    assert result.returncode == 2
    assert "example_seg.nii.gz: a labelmap needs a JSON map of label values to structure names" in result.stderr


def test_consensus_help_lists_the_contract():
    text = run("consensus", "--help").stdout
    for option in ("--protocol", "--out", "--labels-json", "--readers-names", "--fusion", "--convention"):
        assert option in text
