"""`medannot dicom-import` and `medannot deid` as a user runs them: exit codes, printed summaries, files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import SimpleITK as sitk

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


MEDANNOT = str(Path(sys.executable).parent / "medannot")


def medannot(*args, env_extra=None, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [MEDANNOT, *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kwargs,
    )


def test_dicom_import_writes_the_series_image(sample_dir, tmp_path):
    out = tmp_path / "ct.nrrd"
    result = medannot("dicom-import", sample_dir / "example_ct_dicom", out)
    assert result.returncode == 0, result.stderr
    assert "CT series" in result.stdout and "20 slices, 512 x 512 x 20 voxels of 0.976562 x 0.976562 x 2 mm" in (
        result.stdout
    )
    image = sitk.ReadImage(str(out))
    assert image.GetSize() == (512, 512, 20) and image.GetPixelID() == sitk.sitkInt16


def test_dicom_import_of_a_series_with_a_missing_slice_exits_2(sample_dir, tmp_path):
    folder = tmp_path / "series"
    shutil.copytree(sample_dir / "example_ct_dicom", folder)
    by_z = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation))
    by_z[5].unlink()
    result = medannot("dicom-import", folder, tmp_path / "ct.nrrd")
    assert result.returncode == 2
    assert "error:" in result.stderr and "1 slice(s) missing between" in result.stderr
    assert not (tmp_path / "ct.nrrd").exists()


def test_deid_real_series_with_a_stored_key(sample_dir, tmp_path):
    config = {"MEDANNOT_CONFIG_DIR": str(tmp_path / "config")}
    result = medannot("deid", sample_dir / "example_ct_dicom", tmp_path / "out", "--keep-dates-shifted", "-q",
                      env_extra=config)  # fmt: skip
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "config" / "medannotassist" / "deid-project.key"
    assert f"project key: created in {key_file}" in result.stdout
    assert len(key_file.read_text().strip()) == 64 and (key_file.stat().st_mode & 0o777) == 0o600
    assert "De-identified 20 of 20 DICOM files read" in result.stdout and "0 flagged for review" in result.stdout
    written = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(written) == 20
    originals = {pydicom.dcmread(p).PixelData for p in (sample_dir / "example_ct_dicom").iterdir()}
    assert {pydicom.dcmread(p).PixelData for p in written} == originals
    first = pydicom.dcmread(written[0])
    assert first.PatientIdentityRemoved == "YES" and first.LongitudinalTemporalInformationModified == "MODIFIED"
    # the same key file, a second run: the same UIDs
    again = medannot("deid", sample_dir / "example_ct_dicom", tmp_path / "again", "-q", env_extra=config)
    assert "project key: read from" in again.stdout
    assert sorted(p.name for p in (tmp_path / "again").rglob("*.dcm")) == [p.name for p in written]
    # the de-identified series imports as the original did: same grid, same voxels, no local coding scheme left
    assert not [p.name for p in written if b"USB.PROCEDURES" in p.read_bytes()]
    for folder, name in ((sample_dir / "example_ct_dicom", "original.nrrd"), (tmp_path / "out", "deid.nrrd")):
        imported = medannot("dicom-import", folder, tmp_path / name)
        assert imported.returncode == 0, imported.stderr
    original, deid = (sitk.ReadImage(str(tmp_path / name)) for name in ("original.nrrd", "deid.nrrd"))
    assert deid.GetSize() == original.GetSize() == (512, 512, 20)
    assert deid.GetSpacing() == original.GetSpacing() and deid.GetOrigin() == original.GetOrigin()
    assert deid.GetDirection() == original.GetDirection()
    assert (sitk.GetArrayFromImage(deid) == sitk.GetArrayFromImage(original)).all()


def test_deid_key_from_the_environment_or_a_file_and_a_warning_on_the_command_line(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(PYDICOM_FILES / "CT_small.dcm", source / "ct.dcm")
    key = "project-key-9f8e7d"
    config = {"MEDANNOT_CONFIG_DIR": str(tmp_path / "config")}
    by_env = medannot("deid", source, tmp_path / "env", "-q", env_extra=config | {"MEDANNOT_PROJECT_KEY": key})
    assert by_env.returncode == 0, by_env.stderr
    assert "project key: from the MEDANNOT_PROJECT_KEY environment variable" in by_env.stdout
    assert by_env.stderr == "" and not (tmp_path / "config").exists()  # no key file created beside it
    (tmp_path / "key").write_text(key + "\n")
    by_file = medannot("deid", source, tmp_path / "file", "-q", "--key-file", tmp_path / "key", env_extra=config)
    assert by_file.returncode == 0 and by_file.stderr == "" and "read from" in by_file.stdout
    by_argument = medannot("deid", source, tmp_path / "argument", "-q", "--project-key", key, env_extra=config)
    assert by_argument.returncode == 0
    assert "warning: --project-key shows the key" in by_argument.stderr and "(ps)" in by_argument.stderr
    names = [sorted(p.name for p in (tmp_path / run).rglob("*.dcm")) for run in ("env", "file", "argument")]
    assert names[0] == names[1] == names[2] and len(names[0]) == 1  # one key, one set of UIDs
    for result in (by_env, by_file, by_argument):
        assert key not in result.stdout + result.stderr
    empty = medannot("deid", source, tmp_path / "empty", "-q", env_extra=config | {"MEDANNOT_PROJECT_KEY": " "})
    assert empty.returncode == 2 and "MEDANNOT_PROJECT_KEY is set but empty" in empty.stderr
    assert not (tmp_path / "empty").exists() and not (tmp_path / "config").exists()


def test_deid_flags_burned_in_risk_with_exit_3_and_json(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("CT_small.dcm", "ExplVR_BigEnd.dcm", "notes.txt"):
        if name.endswith(".txt"):
            (source / name).write_text("not DICOM")
        else:
            shutil.copy(PYDICOM_FILES / name, source / name)
    result = medannot("deid", source, tmp_path / "out", "--project-key", "k1", "--json")
    assert result.returncode == 3, result.stderr
    summary = json.loads(result.stdout)
    assert [note["file"] for note in summary["flagged"]] == ["ExplVR_BigEnd.dcm"]
    assert [note["file"] for note in summary["skipped"]] == ["notes.txt"]
    assert len(list((tmp_path / "out" / "needs-review").rglob("*.dcm"))) == 1
    # OUT is now not empty: a second run into it is refused and changes nothing
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    refused = medannot("deid", source, tmp_path / "out", "--project-key", "k1")
    assert refused.returncode == 2 and "the output folder is not empty" in refused.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before


def test_export_seg_and_rtstruct_of_the_sample_pass_dciodvfy(sample_dir, tmp_path, labels_json):
    from Testing.dicom.dicom_helpers import dciodvfy

    for kind in ("seg", "rtstruct"):
        out = tmp_path / f"{kind}.dcm"
        result = medannot("export", kind, "--dicom", sample_dir / "example_ct_dicom", "--labels",
                          sample_dir / "example_seg_dicom.nii.gz", "--labels-json", labels_json,
                          "--protocol", "abdominal-organs", "--out", out)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert (
            "8 structure(s): liver, spleen, pancreas, stomach, aorta, inferior_vena_cava, portal_vein, "
            "adrenal_gland_right\n  skipped (no voxels): kidney_left, kidney_right, gallbladder, adrenal_gland_left, "
            "duodenum\n  skipped (not in the labels): superior_mesenteric_artery"
        ) in result.stdout
        assert "blank SeriesInstanceUID; derived" in result.stdout  # the sample series has none: said, not hidden
        errors, _ = dciodvfy(out)
        assert errors == [], errors
        written = pydicom.dcmread(out, stop_before_pixels=True)
        assert written.Modality == ("SEG" if kind == "seg" else "RTSTRUCT")


def test_export_of_labels_from_another_scan_exits_2(sample_dir, tmp_path, labels_json):
    result = medannot("export", "seg", "--dicom", sample_dir / "example_ct_dicom", "--labels",
                      sample_dir / "example_seg.nii.gz", "--labels-json", labels_json,
                      "--protocol", "abdominal-organs", "--out", tmp_path / "x.dcm")  # fmt: skip
    assert result.returncode == 2
    assert "example_seg.nii.gz: the labels are not on the image's voxel grid" in result.stderr
    assert not (tmp_path / "x.dcm").exists()
