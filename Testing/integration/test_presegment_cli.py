"""`medannot engines | presegment | presegment-batch` as a user runs them: real processes, real files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

MEDANNOT = [str(Path(sys.executable).parent / "medannot")]


def run(*args, timeout=300):
    return subprocess.run([*MEDANNOT, *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_engines_lists_each_engine_and_what_it_needs():
    result = run("engines")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(rows) == {"ct", "seeds", "onnx", "monai-label", "totalsegmentator"}
    assert " usable " in rows["ct"] and " usable " in rows["onnx"]
    assert "not usable" in rows["totalsegmentator"] and "pip install" in rows["totalsegmentator"]


def test_presegment_writes_a_slicer_segmentation_with_provenance(sample_dir, tmp_path):
    from MedAnnotAssistLib.core import provenance as prov
    from MedAnnotAssistLib.core.protocol import bundled_protocol
    from MedAnnotAssistLib.mrml.presegment import aiProvenance
    from MedAnnotAssistLib.mrml.protocol_segments import structureSegments
    from MedAnnotAssistLib.mrml.scene import SceneContext
    from MedAnnotAssistLib.mrml.segmentation import loadSegmentation, segmentMasks

    out = tmp_path / "case.seg.nrrd"
    result = run("presegment", sample_dir / "example_ct_sm.nii.gz", "--engine", "ct", "--out", out,
                 "--protocol", "lung-nodule", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Left lung" in result.stdout and "case uncertainty" in result.stdout
    node = loadSegmentation(SceneContext.headless(), out)
    protocol = bundled_protocol("lung-nodule")
    segments = structureSegments(node, protocol)
    assert {"lung_left", "lung_right"} <= set(segments)
    recorded = aiProvenance(node, "lung_left")
    assert recorded["engine"] == "ct" and recorded["state"] == prov.SUGGESTED and 0 < recorded["confidence"] <= 1
    assert recorded["parameters"]["lung_hu"] == -400.0 and recorded["parameters"]["fat_hu"] == [-190.0, -30.0]
    volume = segmentMasks(node, [segments["lung_left"]])[0][segments["lung_left"]].sum() * 27 / 1000
    summary = json.loads(out.with_name("case.presegment.json").read_text())
    assert summary["structures"]["Left lung"]["volume_ml"] == pytest.approx(volume, abs=0.01)


def test_presegment_a_dicom_series(sample_dir, tmp_path):
    out = tmp_path / "dicom.seg.nrrd"
    result = run("presegment", sample_dir / "example_ct_dicom", "--engine", "ct", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    labels = sitk.ReadImage(str(out))
    reference = sitk.ReadImage(str(sample_dir / "example_seg_dicom.nii.gz"))
    assert labels.GetSize() == reference.GetSize()
    assert labels.GetSpacing() == pytest.approx(reference.GetSpacing(), abs=1e-3)
    assert sitk.GetArrayViewFromImage(labels).any()


def test_an_mr_is_refused_and_nothing_is_written(sample_dir, tmp_path):
    out = tmp_path / "mr.seg.nrrd"
    result = run("presegment", sample_dir / "example_mr_sm.nii.gz", "--engine", "ct", "--out", out, "--quiet")
    assert result.returncode == 2
    assert "MR" in result.stderr and "error:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_batch_on_a_local_dask_cluster_keeps_going_past_a_bad_scan(sample_dir, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    shutil.copy(sample_dir / "example_ct_sm.nii.gz", scans / "a_ct.nii.gz")
    shutil.copytree(sample_dir / "example_ct_dicom", scans / "b_dicom")
    shutil.copy(sample_dir / "example_mr_sm.nii.gz", scans / "c_mr.nii.gz")
    (scans / "d_broken.nrrd").write_text("not an image")
    out = tmp_path / "out"
    result = run("presegment-batch", scans, "--engine", "ct", "--out", out, "--workers", "2", timeout=600)
    assert result.returncode == 3, result.stderr  # some cases failed
    assert "4 case(s) on a local Dask cluster of 2 workers" in result.stderr
    assert "batch [" in result.stderr and "100.0%" in result.stderr  # the progress bar
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:-1]}
    assert " ok " in lines["a_ct"] and " ok " in lines["b_dicom"]
    assert "failed" in lines["c_mr"] and "EngineError" in lines["c_mr"]
    assert "failed" in lines["d_broken"] and "cannot read as an image" in lines["d_broken"]
    assert result.stdout.splitlines()[-1].startswith("2 ok, 2 failed")
    assert len(result.stdout.splitlines()) == 6  # header, one line per case, the total
    for output in (result.stdout, result.stderr):  # a bad case is one line, not a Dask worker's traceback
        assert "Traceback" not in output and "Compute Failed" not in output, output
    assert sorted(p.name for p in out.glob("*.seg.nrrd")) == ["a_ct.seg.nrrd", "b_dicom.seg.nrrd"]
