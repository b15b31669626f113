"""Input the CLI must refuse with exit 2 and a message naming the file (and the JSON path) and what was expected:
`check` on an image that is not a segmentation, typos in a `--labels-json` file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MEDANNOT = [str(Path(sys.executable).parent / "medannot")]


def run(*args):
    return subprocess.run([*MEDANNOT, *map(str, args)], capture_output=True, text=True, timeout=300)


def prepare(sample_dir, out, names_file, protocol="abdominal-organs"):
    return run("prepare", sample_dir / "example_ct_sm.nii.gz", "--protocol", protocol, "--out", out,
               "--labels", sample_dir / "example_seg.nii.gz", "--labels-json", names_file)  # fmt: skip


def test_check_refuses_an_image_that_is_not_a_segmentation(sample_dir, tmp_path):
    image = sample_dir / "example_ct_sm.nii.gz"
    result = run("check", image, "--protocol", "abdominal-organs")
    assert result.returncode == 2, result.stdout
    assert result.stderr.splitlines()[-1].startswith(
        f"error: {image}: not a segmentation but a plain 122 x 101 x 30 image; expected a Slicer segmentation "
        "(.seg.nrrd, with Segment0_Name in its NRRD header)"
    )
    assert result.stdout == ""  # no "pending" table for a file that was never a segmentation
    text = tmp_path / "notes.seg.nrrd"
    text.write_text("not an image")
    refused = run("check", text, "--protocol", "abdominal-organs")
    assert refused.returncode == 2
    assert f"error: {text}: not an image file; expected a Slicer segmentation" in refused.stderr


def test_a_label_name_that_matches_nothing_is_a_typo(sample_dir, tmp_path):
    names = json.loads((sample_dir / "labels_total.json").read_text())
    names["5"] = "livr"
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps(names))
    result = prepare(sample_dir, tmp_path / "out", names_file)
    assert result.returncode == 2, result.stdout
    assert result.stderr.splitlines()[-1] == (
        f"error: {names_file}: $.5: 'livr' is neither a structure of abdominal-organs@1.1.0 nor a class name the "
        "name map knows (did you mean 'liver'?); correct it, or remove the entry to leave label 5 out"
    )
    assert not (tmp_path / "out").exists()
    # the same file is refused by every command that reads label names against a protocol
    readers = (sample_dir / "example_seg.nii.gz", sample_dir / "example_seg_fast.nii.gz")
    consensus = run("consensus", *readers, "--protocol", "abdominal-organs", "--labels-json", names_file,
                    "--out", tmp_path / "c")  # fmt: skip
    assert consensus.returncode == 2 and "$.5: 'livr' is neither a structure" in consensus.stderr


def test_a_key_that_is_no_label_while_a_label_has_no_name_is_a_typo(sample_dir, tmp_path):
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps({"55": "liver", "1": "spleen"}))  # the liver is label 5 in example_seg
    result = prepare(sample_dir, tmp_path / "out", names_file)
    assert result.returncode == 2, result.stdout
    labels = sample_dir / "example_seg.nii.gz"
    assert f"error: {names_file}: $.55: no such label in {labels}, whose label(s) 2, 3, " in result.stderr
    assert "have no name in" in result.stderr and "a mistyped key?" in result.stderr


def test_a_names_file_for_another_labelmap_is_refused(sample_dir, tmp_path):
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps({"200": "liver", "201": "spleen"}))
    result = prepare(sample_dir, tmp_path / "out", names_file)
    assert result.returncode == 2
    assert f"{names_file}: none of its labels occurs in {sample_dir / 'example_seg.nii.gz'} (its labels: 1, 2, 3" in (
        result.stderr
    )


def test_a_partial_names_file_drops_the_unnamed_labels_and_says_so(sample_dir, tmp_path):
    names_file = tmp_path / "names.json"
    names_file.write_text(json.dumps({"5": "Liver", "1": "spleen", "3": "Left Kidney", "64": "portal vein"}))
    result = prepare(sample_dir, tmp_path / "out", names_file)
    assert result.returncode == 0, result.stderr
    assert "abdominal-organs@1.1.0: 10 segment(s) created, 4 matched, 0 not in the protocol" in result.stdout
    assert "dropped (not in abdominal-organs@1.1.0): label 2 (no name), label 4 (no name)" in result.stdout


def test_a_labelmap_without_names_is_refused(sample_dir, tmp_path):
    result = run("prepare", sample_dir / "example_ct_sm.nii.gz", "--protocol", "abdominal-organs", "--out", tmp_path,
                 "--labels", sample_dir / "example_seg.nii.gz")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: {sample_dir / 'example_seg.nii.gz'}: a labelmap needs --labels-json, a JSON map of label values "
        "to names"
    )
