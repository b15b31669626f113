"""The TotalSegmentator engine: install detection, class-name codes, and the child-process plumbing.

TotalSegmentator's weights ship in no package (the program downloads them), so the real model cannot
run here. The plumbing is tested against ``FAKE_TOTALSEGMENTATOR`` below: a TEST DOUBLE standing in
for the real ``TotalSegmentator`` command, put first on PATH, with an empty stand-in weights folder.
It takes the real command line, thresholds the real CT into a labelmap with TotalSegmentator's "total"
label values, and can also fail, hang, or write the label table TotalSegmentator puts in the NIfTI
header extension.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytest

from MedAnnotAssistLib.core.engines import EngineError, EngineUnavailable, get_engine, list_engines, match_protocol
from MedAnnotAssistLib.core.engines.totalsegmentator import (
    TOTAL_CLASSES,
    TotalSegmentatorEngine,
    read_label_table,
    structure_for,
)
from MedAnnotAssistLib.core.jobs import CancelledError
from MedAnnotAssistLib.core.protocol import bundled_protocol
from Testing.readers import ABDOMEN_LABELS

FAKE_TOTALSEGMENTATOR = r'''#!{python}
"""TEST DOUBLE for the TotalSegmentator command line (see the test module's docstring)."""
import argparse, gzip, json, os, struct, sys, time
import numpy as np
import SimpleITK as sitk

parser = argparse.ArgumentParser()
parser.add_argument("-i"); parser.add_argument("-o"); parser.add_argument("--ml", action="store_true")
parser.add_argument("--task"); parser.add_argument("--fast", action="store_true"); parser.add_argument("--device")
args = parser.parse_args()
record = os.environ["FAKE_TS_RECORD"]
json.dump({{"argv": sys.argv[1:], "pid": os.getpid()}}, open(record, "w"))
mode = os.environ.get("FAKE_TS_MODE", "ok")
print("Resampling...", flush=True)
if mode == "fail":
    print("Traceback (most recent call last):\nRuntimeError: CUDA out of memory", file=sys.stderr)
    sys.exit(3)
print("Predicting...", flush=True)
if mode == "hang":
    time.sleep(120)
if mode == "nooutput":
    sys.exit(0)
image = sitk.ReadImage(args.i)
hu = sitk.GetArrayFromImage(image)
labels = np.zeros(hu.shape, np.uint8)
labels[(hu > 0) & (hu <= 150)] = 5     # "liver"
labels[(hu > 150) & (hu <= 300)] = 52  # "aorta"
labels[hu > 1000] = 150                # not a "total" class
out = sitk.GetImageFromArray(labels)
out.CopyInformation(image)
plain = args.o[:-3]
sitk.WriteImage(out, plain)
data = open(plain, "rb").read()
os.remove(plain)
if mode == "ext":  # the label table TotalSegmentator writes (nifti_ext_header.add_label_map_to_nifti)
    body = "".join(f'<Label Key="{{k}}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{{v}}]]></Label>\n'
                   for k, v in {{5: "liver", 52: "aorta", 150: "iliac_artery_left"}}.items())
    xml = ('<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0"> <LabelTable>'
           + body + "</LabelTable> </VolumeInformation></CaretExtension>").encode()
    xml += b" " * (-(len(xml) + 8) % 16)
    offset = int(struct.unpack("<f", data[108:112])[0])
    header = data[:108] + struct.pack("<f", 352 + 8 + len(xml)) + data[112:348]
    data = header + b"\1\0\0\0" + struct.pack("<ii", 8 + len(xml), 0) + xml + data[offset:]
print("Saving segmentations...", flush=True)
with gzip.open(args.o, "wb") as stream:
    stream.write(data)
'''


@pytest.fixture
def fake_totalsegmentator(tmp_path, monkeypatch):
    """PATH with the test double first, an empty stand-in weights folder; returns the record file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "TotalSegmentator"
    script.write_text(FAKE_TOTALSEGMENTATOR.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    (tmp_path / "home/nnunet/results/Dataset297_TotalSegmentator_total_3mm_1559subj").mkdir(parents=True)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_TS_RECORD", str(record))
    return record


@pytest.fixture(scope="module")
def ct(sample_dir):
    import SimpleITK as sitk

    return sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))


def test_probe_says_what_to_install_here(ct):
    import shutil

    if shutil.which("TotalSegmentator"):
        pytest.skip("a real TotalSegmentator is installed on this machine")
    usable, detail = TotalSegmentatorEngine.probe()
    assert not usable
    assert "pip install TotalSegmentator" in detail and "totalseg_download_weights -t total_fast" in detail
    row = next(r for r in list_engines() if r["name"] == "totalsegmentator")
    assert row == {"name": "totalsegmentator", "usable": False, "detail": detail}
    with pytest.raises(EngineUnavailable, match="pip install TotalSegmentator"):
        TotalSegmentatorEngine().run(ct)


def test_probe_needs_the_weights_too(fake_totalsegmentator, tmp_path, monkeypatch):
    assert TotalSegmentatorEngine.probe()[0]
    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "empty"))
    usable, detail = TotalSegmentatorEngine.probe()
    assert not usable
    assert "Dataset297_*" in detail and str(tmp_path / "empty/nnunet/results") in detail
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "home/nnunet/results"))
    assert TotalSegmentatorEngine.probe()[0]  # TOTALSEG_WEIGHTS_PATH wins, as in TotalSegmentator's config.py


def test_class_names_carry_the_abdominal_protocol_codes(total_labels):
    protocol = bundled_protocol("abdominal-organs")
    info = TotalSegmentatorEngine().info()
    for value, structure_id in ABDOMEN_LABELS.items():
        class_name = total_labels[value]
        assert TOTAL_CLASSES[value] == class_name  # the built-in table agrees with labels_total.json
        engine_structure = info.structure(class_name)
        expected = protocol.structure(structure_id).terminology
        assert engine_structure.terminology.type == expected.type, class_name
        assert engine_structure.terminology.type_modifier == expected.type_modifier, class_name
    matched = match_protocol(info, protocol)
    assert {s.id for s in matched.values()} == set(ABDOMEN_LABELS.values())
    # the only abdominal-organs structure TotalSegmentator's "total" task does not produce
    assert {s.id for s in protocol.structures} - set(ABDOMEN_LABELS.values()) == {"superior_mesenteric_artery"}


def test_other_names_get_codes_or_the_generic_code():
    assert structure_for("lung_upper_lobe_left").terminology.type.value == "44714003"
    femur = structure_for("femur_right").terminology
    assert (femur.type.value, femur.type_modifier.meaning) == ("71341001", "Right")
    rib = structure_for("rib_left_1", "rib_left_1")
    assert rib.id == "rib_left_1" and rib.terminology.type.meaning == "Anatomical structure"


def test_runs_the_child_and_maps_its_labels(fake_totalsegmentator, ct):
    import SimpleITK as sitk

    reports = []
    result = get_engine("totalsegmentator").run(ct, progress=lambda f, m: reports.append((f, m)))
    argv = json.loads(fake_totalsegmentator.read_text())["argv"]
    assert argv[0] == "-i" and argv[1].endswith("image.nii.gz") and argv[2] == "-o" and argv[3].endswith(".nii.gz")
    assert argv[4:] == ["--ml", "--task", "total", "--fast", "--device", "cpu"]
    assert not os.path.exists(os.path.dirname(argv[1]))  # the temporary folder is gone

    hu = sitk.GetArrayFromImage(ct)
    expected = np.zeros(hu.shape, np.uint8)
    expected[(hu > 0) & (hu <= 150)] = 5
    expected[(hu > 150) & (hu <= 300)] = 52
    expected[hu > 1000] = 150
    np.testing.assert_array_equal(result.labels, expected)
    assert result.names == {5: "liver", 52: "aorta", 150: "label_150"}
    assert result.confidence == {} and 0.0 <= result.uncertainty <= 1.0
    assert result.provenance["engine"] == "totalsegmentator" and result.provenance["parameters"]["fast"] is True
    assert reports[-1] == (1.0, "done") and all(0 <= f <= 1 for f, _ in reports)

    only = TotalSegmentatorEngine().run(ct, structures=["aorta"])
    assert only.names == {52: "aorta"} and set(np.unique(only.labels)) == {0, 52}


def test_reads_the_label_table_in_the_nifti_extension(fake_totalsegmentator, ct, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TS_MODE", "ext")
    result = TotalSegmentatorEngine().run(ct)
    assert result.names == {5: "liver", 52: "aorta", 150: "iliac_artery_left"}
    assert read_label_table(tmp_path / "absent.nii.gz") == {}


def test_a_failing_child_gives_its_exit_status_and_output(fake_totalsegmentator, ct, monkeypatch):
    monkeypatch.setenv("FAKE_TS_MODE", "fail")
    with pytest.raises(
        EngineError, match=r"exit status 3\): Resampling\.\.\.\nTraceback.*\nRuntimeError: CUDA out of memory"
    ):
        TotalSegmentatorEngine().run(ct)
    monkeypatch.setenv("FAKE_TS_MODE", "nooutput")
    with pytest.raises(EngineError, match="wrote no labelmap"):
        TotalSegmentatorEngine().run(ct)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_cancel_terminates_the_child(fake_totalsegmentator, ct, monkeypatch):
    monkeypatch.setenv("FAKE_TS_MODE", "hang")
    reports = []
    started = time.monotonic()
    with pytest.raises(CancelledError):
        TotalSegmentatorEngine().run(
            ct, progress=lambda f, m: reports.append((f, m)), cancel=lambda: any("Predicting" in m for _, m in reports)
        )
    assert time.monotonic() - started < 30  # the child sleeps 120 s
    assert any(f >= 0.2 for f, m in reports if "Predicting" in m)  # progress from the printed stage
    assert _gone(json.loads(fake_totalsegmentator.read_text())["pid"])


def test_timeout_terminates_the_child(fake_totalsegmentator, ct, monkeypatch):
    monkeypatch.setenv("FAKE_TS_MODE", "hang")
    with pytest.raises(EngineError, match=r"did not finish within 2 s: Resampling\.\.\.\nPredicting\.\.\."):
        TotalSegmentatorEngine(timeout_s=2).run(ct)
    assert _gone(json.loads(fake_totalsegmentator.read_text())["pid"])
