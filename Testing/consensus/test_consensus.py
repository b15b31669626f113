"""The consensus of a case from readers' files: real readers, edge cases and the written outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.consensus import ADJUDICATE, AGREED, compute_consensus
from MedAnnotAssistLib.core.consensus_files import read_readers, run_consensus
from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.core.metrics import pairwise_metrics
from MedAnnotAssistLib.core.protocol import bundled_protocol

from ..readers import ABDOMEN_LABELS

PROTOCOL = bundled_protocol("abdominal-organs")


@pytest.fixture(scope="module")
def reader_files(sample_dir):
    return [sample_dir / "example_seg.nii.gz", sample_dir / "example_seg_fast.nii.gz"]


def _write_labels(path, array, like=None, spacing=None):
    image = sitk.GetImageFromArray(array)
    if like is not None:
        image.CopyInformation(like)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_real_readers_per_structure_values_equal_the_metrics_of_their_masks(reader_files, real_readers):
    full, fast, spacing, _ = real_readers
    readers = read_readers(reader_files, PROTOCOL, ABDOMEN_LABELS, ["full", "fast"])
    result = compute_consensus(readers, PROTOCOL)
    assert [s.structure.id for s in result.structures] == [
        s.id for s in PROTOCOL.structures if s.id in ABDOMEN_LABELS.values()
    ]
    value_of = {v: k for k, v in ABDOMEN_LABELS.items()}
    for item in result.structures:
        [pair] = item.pairwise
        value = value_of[item.structure.id]
        [expected] = pairwise_metrics([full == value, fast == value], spacing, ["full", "fast"], item.tolerance_mm)
        assert pair == expected, item.structure.id
    liver = result.structure("liver")
    assert liver.verdict == AGREED and "worst Dice 0.981" in liver.reason
    assert result.structure("pancreas").tolerance_mm == 3.0  # the protocol's toleranceMm
    assert result.labels.max() == len(result.structures)
    assert 0 < result.disagreement.max() <= 1


def test_verdicts_follow_the_protocol_agreement(reader_files, real_readers, tmp_path):
    full, _, _, image = real_readers
    # A third reader who drew the liver four voxels (12 mm) too far left and skipped the spleen.
    shifted = np.where(full == 5, 0, full)
    shifted[np.roll(full == 5, 4, axis=2)] = 5
    shifted[shifted == 1] = 0
    third = _write_labels(tmp_path / "third.nii.gz", shifted.astype(np.uint8), like=image)
    readers = read_readers([*reader_files, third], PROTOCOL, ABDOMEN_LABELS)
    result = compute_consensus(readers, PROTOCOL, fusion_method="majority")
    liver, spleen = result.structure("liver"), result.structure("spleen")
    assert liver.verdict == ADJUDICATE and "example_seg vs third" in liver.reason
    assert spleen.verdict == ADJUDICATE and spleen.empty_readers == ["third"]
    assert [len(item.pairwise) for item in (liver, spleen)] == [3, 3]
    assert result.structure("kidney_left").verdict == AGREED
    # The spleen consensus of two of three readers is their intersection's majority: still the spleen.
    assert spleen.consensus.sum() > 0.9 * min(m.sum() for m in spleen.masks[:2])


def test_a_reader_missing_a_structure_counts_as_empty_and_is_named(reader_files):
    names = dict(ABDOMEN_LABELS)
    del names[7]  # this reader's label file has no pancreas at all
    readers = [
        read_reader(reader_files[0], PROTOCOL, ABDOMEN_LABELS, "a"),
        read_reader(reader_files[1], PROTOCOL, names, "b"),
    ]
    pancreas = compute_consensus(readers, PROTOCOL).structure("pancreas")
    assert pancreas.missing_readers == ["b"] and pancreas.empty_readers == ["b"]
    assert pancreas.verdict == ADJUDICATE
    [pair] = pancreas.pairwise
    assert pair.empty == "b" and pair.dice == 0.0 and pair.as_dict()["hd95_mm"] is None


def test_structures_every_reader_left_empty_are_agreed_absent(reader_files, real_readers, tmp_path):
    full, fast, _, image = real_readers
    files = []
    for name, labels in (("a", full), ("b", fast)):
        files.append(
            _write_labels(tmp_path / f"{name}.nii.gz", np.where(labels == 4, 0, labels).astype(np.uint8), image)
        )
    gallbladder = compute_consensus(read_readers(files, PROTOCOL, ABDOMEN_LABELS), PROTOCOL).structure("gallbladder")
    assert gallbladder.verdict == AGREED and "every reader left it empty" in gallbladder.reason
    assert gallbladder.pairwise[0].dice == 1.0 and gallbladder.box is None


def test_mismatched_geometry_names_the_files(reader_files, real_readers, tmp_path):
    full, _, _, image = real_readers
    moved = _write_labels(tmp_path / "moved.nii.gz", full, like=image, spacing=(3.0, 3.0, 2.5))
    with pytest.raises(ValueError) as error:
        compute_consensus(read_readers([reader_files[0], moved], PROTOCOL, ABDOMEN_LABELS), PROTOCOL)
    message = str(error.value)
    assert "not on one image grid" in message and str(moved) in message and "example_seg.nii.gz" in message
    assert "spacing 3 x 3 x 2.5 instead of 3 x 3 x 3" in message


def test_single_reader_gives_its_own_segmentation_and_asks_for_adjudication(reader_files, real_readers):
    result = compute_consensus(read_readers(reader_files[:1], PROTOCOL, ABDOMEN_LABELS), PROTOCOL)
    liver = result.structure("liver")
    assert liver.pairwise == [] and liver.verdict == ADJUDICATE and "one reader" in liver.reason
    assert np.array_equal(liver.consensus, liver.masks[0])
    assert np.array_equal(result.labels == result.structures.index(liver) + 1, real_readers[0] == 5)


def test_2d_images(tmp_path):
    a = np.zeros((60, 80), np.uint8)
    a[10:40, 20:50] = 5
    b = np.roll(a, 3, axis=1)
    files = [_write_labels(tmp_path / f"{n}.nrrd", m, spacing=(0.7, 0.7)) for n, m in (("a", a), ("b", b))]
    result = compute_consensus(read_readers(files, PROTOCOL, {5: "liver"}), PROTOCOL)
    [pair] = result.structure("liver").pairwise
    assert pair.dice == pytest.approx(27 / 30)
    assert pair.hd_mm == pytest.approx(3 * 0.7)
    assert pair.volume_a_ml == pytest.approx(900 * 0.49 / 100)  # 2-D "volumes" are areas in cm²
    assert result.labels.shape == (60, 80) and result.disagreement.shape == (60, 80)


def test_labelmap_without_label_names_and_unknown_files_get_clear_errors(reader_files, tmp_path):
    with pytest.raises(ValueError, match="needs a JSON map of label values"):
        read_reader(reader_files[0], PROTOCOL)
    with pytest.raises(ValueError, match="no such file"):
        read_reader(tmp_path / "nope.nii.gz", PROTOCOL, ABDOMEN_LABELS)
    (tmp_path / "junk.nrrd").write_text("not an image")
    with pytest.raises(ValueError, match="junk.nrrd: cannot read as an image"):
        read_reader(tmp_path / "junk.nrrd", PROTOCOL, ABDOMEN_LABELS)
    with pytest.raises(ValueError, match="3 names for 2 reader files"):
        read_readers(reader_files, PROTOCOL, ABDOMEN_LABELS, ["a", "b", "c"])


def test_run_consensus_writes_the_four_outputs(reader_files, sample_dir, tmp_path):
    result, written = run_consensus(
        reader_files, PROTOCOL, tmp_path, ABDOMEN_LABELS, ["full", "fast"], sample_dir / "example_ct_sm.nii.gz"
    )
    assert sorted(p.name for p in written.values()) == sorted(
        ["consensus.seg.nrrd", "disagreement.nrrd", "agreement.json", "report.html"]
    )
    agreement = json.loads((tmp_path / "agreement.json").read_text())
    liver = agreement["structures"]["Liver"]
    assert set(liver["pairwise"][0]) >= {"a", "b", "dice", "jaccard", "hd_mm", "hd95_mm", "assd_mm", "surface_dice"}
    assert liver["pairwise"][0]["tolerance_mm"] == 2.0 and liver["verdict"] == "agreed"
    assert [s["reader"] for s in liver["staple"]] == ["full", "fast"]
    assert agreement["protocol"]["checksum"] == PROTOCOL.checksum

    consensus = read_reader(tmp_path / "consensus.seg.nrrd", PROTOCOL)  # named by its own header and tags
    assert sorted(consensus.segments) == sorted(s.structure.id for s in result.structures)
    assert np.array_equal(
        consensus.mask("liver"), result.labels == result.structures.index(result.structure("liver")) + 1
    )
    disagreement = sitk.ReadImage(str(tmp_path / "disagreement.nrrd"))
    assert disagreement.GetSpacing() == pytest.approx((3.0, 3.0, 3.0))
    assert sitk.GetArrayFromImage(disagreement).max() == pytest.approx(0.5)

    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(result.structures) + 1
    assert "Portal and splenic vein" in html and "agreed" in html and "http" not in html.replace("http-equiv", "")
