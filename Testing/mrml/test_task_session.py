"""The task session on slicer-core with the real sample CT: the case opens with its AI pre-segmentation (the
real liver), the CT engine proposes the lungs, the reader accepts them, refines the liver with a real mask
edit, answers the Lung-RADS question and passes the protocol gate with overrides; the packed submission holds
the times of a controlled clock, each structure's AI history and the AI-vs-final statistics, and passes the
server's own checks; closing leaves the scene as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedAnnotAssistLib.core import provenance as prov
from MedAnnotAssistLib.core.activity import ManualClock
from MedAnnotAssistLib.core.engines import get_engine
from MedAnnotAssistLib.core.labelio import Geometry, read_reader
from MedAnnotAssistLib.mrml.segmentation import segmentMasks, setSegmentMask
from MedAnnotAssistLib.mrml.task_loading import nodeIds
from MedAnnotAssistLib.mrml.task_session import NotReadyError, TaskSession, TaskSessionError
from Testing.task_case import AI_PROVENANCE, chest_protocol, write_ai_liver


@pytest.fixture(scope="module")
def protocol():
    return chest_protocol()


@pytest.fixture(scope="module")
def ai_liver(tmp_path_factory, sample_dir, protocol):
    return write_ai_liver(tmp_path_factory.mktemp("ai") / "case-1.ai.seg.nrrd", sample_dir, protocol)


@pytest.fixture
def opened(context, sample_dir, protocol, ai_liver):
    clock = ManualClock(100.0)
    task = {"task_id": 7, "case_id": 3, "case_name": "case-1", "lease_id": "secret-lease"}
    session = TaskSession.open(
        context, protocol, sample_dir / "example_ct_sm.nii.gz", ai_liver[0], task, clock, idle_after_s=60
    )
    yield session, clock
    session.close()


def _states(session) -> dict[str, str]:
    return {s.structure_id: s.state for s in session.structures}


def test_a_reader_works_a_case_into_a_submission_the_server_accepts(context, sample_dir, protocol, ai_liver):
    before = nodeIds(context.scene)
    clock = ManualClock(100.0)
    task = {"task_id": 7, "case_id": 3, "case_name": "case-1", "lease_id": "secret-lease"}
    session = TaskSession.open(
        context, protocol, sample_dir / "example_ct_sm.nii.gz", ai_liver[0], task, clock, idle_after_s=60
    )
    proposal_liver = ai_liver[1]
    assert _states(session) == {"lung_left": "empty", "lung_right": "empty", "nodule": "empty", "liver": "suggested"}
    assert session.proposalNode.GetHideFromEditors()
    events = []
    session.subscribe(lambda event, key: events.append((event, key)))

    clock.advance(5)  # reading the case: the case's time, no structure's
    session.select("lung_left")
    applied = session.runEngine(get_engine("ct"))
    assert applied == {"structures": {"lung_left": ["lung_left"], "lung_right": ["lung_right"]}, "dropped": []}
    assert _states(session)["lung_left"] == _states(session)["lung_right"] == "suggested"
    clock.advance(12)
    session.accept("lung_left")
    session.select("lung_right")
    clock.advance(8)
    session.accept("lung_right")

    session.select("liver")
    clock.advance(20)
    liver = session.mask("liver")
    assert np.array_equal(liver, proposal_liver)
    eroded = ndimage.binary_erosion(liver)
    setSegmentMask(session.segmentationNode, session.segmentId("liver"), eroded)  # what the Segment Editor does
    assert session.state("liver") == "refined" and ("state", "liver") in events
    clock.advance(600)  # the reader walks away: 60 s count, 540 s are idle
    session.touch()
    clock.advance(4)
    session.answer("lung_rads", "2")
    session.declareAbsent("nodule")

    out = ai_liver[0].parent / "out"
    with pytest.raises(NotReadyError, match=r"Left lung: volume 4\d\.\d ml, expected 500-5000 ml \(no override"):
        session.pack(out)
    assert not out.exists()
    gate = session.check()
    assert [(f.structure, f.rule) for f in gate.blocking] == [("lung_left", "volumeMl"), ("lung_right", "volumeMl")]
    for failure in gate.blocking:
        session.override(failure.structure, failure.rule, "30 slices: only the lung bases are in the image")
    assert session.check().ready

    path, metadata = session.pack(out)
    assert path == out / "case-1.seg.nrrd"

    # times from the controlled clock: 5 + 12 + 8 + (20 + 60 + 4), idle 540
    assert metadata["time_spent_s"] == 109.0
    assert metadata["timing"]["structures"] == {"lung_left": 12.0, "lung_right": 8.0, "liver": 84.0, "nodule": 0.0}
    assert metadata["timing"]["unassigned_s"] == 5.0 and metadata["timing"]["idle_s"] == 540.0
    segments = metadata["segments"]
    assert {k: v["state"] for k, v in segments.items()} == {
        "lung_left": "accepted",
        "lung_right": "accepted",
        "nodule": "absent",
        "liver": "refined",
    }
    assert segments["liver"]["active_s"] == 84.0

    # the liver: the AI proposal is the first version, then the reader's edit, then the final with statistics
    history = segments["liver"]["history"]
    assert [e["event"] for e in history] == ["proposed", "edited", "final"]
    assert {k: history[0][k] for k in AI_PROVENANCE} == AI_PROVENANCE
    assert history[0]["confidence"] == 0.93 and history[0]["source"] == "case-1.ai.seg.nrrd"
    assert history[0]["voxels"] == int(proposal_liver.sum())
    assert history[0]["sha256"] == prov.mask_sha256(proposal_liver)
    assert history[1]["active_s"] == 45.0 and history[1]["by"] == "reader"
    removed = int(proposal_liver.sum() - eroded.sum())
    statistics = segments["liver"]["ai_vs_final"]
    assert statistics["voxels_removed"] == removed and statistics["voxels_added"] == 0
    assert statistics["dice"] == pytest.approx(2 * eroded.sum() / (proposal_liver.sum() + eroded.sum()))
    assert history[-1]["sha256"] == prov.mask_sha256(eroded) != history[0]["sha256"]
    assert segments["liver"]["provenance"]["state"] == "refined"

    # the lungs: the CT engine's proposal, the reader's acceptance, the override, the final (unchanged)
    lung = segments["lung_left"]
    assert [e["event"] for e in lung["history"]] == ["proposed", "accepted", "override", "final"]
    assert lung["history"][0]["engine"] == "ct" and lung["history"][0]["parameters"]["lung_hu"] == -400.0
    assert lung["history"][0]["sha256"] == lung["sha256"] and lung["ai_vs_final"]["dice"] == 1.0
    assert metadata["answers"] == {"lung_rads": "2"}
    assert metadata["overrides"] == [
        {"structure": "lung_left", "rule": "volumeMl", "reason": "30 slices: only the lung bases are in the image"},
        {"structure": "lung_right", "rule": "volumeMl", "reason": "30 slices: only the lung bases are in the image"},
    ]
    assert metadata["case"]["task"] == {"task_id": 7, "case_id": 3, "case_name": "case-1"}  # no lease id
    assert [s["source"] for s in metadata["ai"]] == ["file", "engine"]

    # the server's own checks accept the file and the metadata, with exactly the reader's two overrides
    from medannotassist_server.protocol_rules import check_submission
    from medannotassist_server.submissions import parse_metadata
    from medannotassist_server.uploads import check_segmentation

    image = sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))
    parsed = parse_metadata(json.dumps(metadata, allow_nan=False), protocol)
    labels = check_segmentation(path, path.name, protocol, Geometry.of(image), 10**8, "reader-a")
    needed = check_submission(protocol, labels, parsed, path.name)
    assert [(o["structure"], o["rule"]) for o in needed] == [("lung_left", "volumeMl"), ("lung_right", "volumeMl")]
    written = read_reader(path, protocol)
    assert np.array_equal(written.mask("liver"), eroded)
    assert np.array_equal(written.mask("lung_left"), session.mask("lung_left")) and not written.mask("nodule").any()

    session.close()
    assert nodeIds(context.scene) == before
    assert events[-1] == ("closed", None)
    with pytest.raises(TaskSessionError, match="the session of case 'case-1' is closed"):
        session.accept("liver")


def test_reject_accept_and_revert(opened):
    session, clock = opened
    proposal = session.mask("liver")
    session.reject("liver")
    assert session.state("liver") == "rejected" and not session.mask("liver").any()
    session.accept("liver")  # the proposal comes back
    assert session.state("liver") == "accepted" and np.array_equal(session.mask("liver"), proposal)
    session.setMask("liver", ndimage.binary_dilation(proposal))
    assert session.state("liver") == "refined"
    with pytest.raises(TaskSessionError, match="'Liver' was edited after the AI's proposal"):
        session.accept("liver")
    session.revert("liver")
    assert session.state("liver") == "suggested" and np.array_equal(session.mask("liver"), proposal)


def test_a_rejected_proposal_is_reported_as_removed(opened, tmp_path):
    session, _ = opened
    proposal = session.mask("liver")
    session.reject("liver")
    path, metadata = session.pack(tmp_path, require_ready=False)
    liver = metadata["segments"]["liver"]
    assert liver["state"] == "rejected" and liver["voxels"] == 0
    assert liver["ai_vs_final"]["voxels_removed"] == int(proposal.sum()) and liver["ai_vs_final"]["dice"] == 0.0
    assert [e["event"] for e in liver["history"]] == ["proposed", "rejected", "final"]
    assert metadata["gate"]["ready"] is False and path.is_file()


def test_edits_and_done_without_ai(opened, sample_dir):
    session, clock = opened
    events = []
    session.subscribe(lambda event, key: events.append((event, key)))
    nodule = np.zeros(session.mask("liver").shape, bool)
    nodule[15:17, 40:43, 60:63] = True
    session.setMask("nodule", nodule)
    session.setMask("nodule", nodule)  # a second stroke: one "edited" entry, two edits
    assert session.state("nodule") == "refined" and ("state", "nodule") in events
    session.markDone("nodule")
    assert session.state("nodule") == "done" and session.structure("nodule").edit == "refined"
    session.setMask("nodule", np.zeros_like(nodule))
    assert session.state("nodule") == "refined"  # an edit reopens a finished structure
    assert [e["event"] for e in session.structure("nodule").history] == ["edited", "done", "edited"]
    assert session.structure("nodule").history[0]["edits"] == 2
    session.check()
    assert session.state("nodule") == "empty"  # erased again: nothing drawn


def test_bad_requests_name_what_is_wrong(opened):
    session, _ = opened
    with pytest.raises(TaskSessionError, match="structure 'kidney' is not in protocol chest-screening-test@1.1.0"):
        session.select("kidney")
    with pytest.raises(TaskSessionError, match=r"question 'birads' is not in .* \(its questions: lung_rads, nodule"):
        session.answer("birads", "2")
    with pytest.raises(TaskSessionError, match="answer to 'lung_rads': expected one of 1, 2, 3, 4A, 4B, 4X, got '5'"):
        session.answer("lung_rads", "5")
    with pytest.raises(TaskSessionError, match="rule: expected one of volumeMl, .* or none, got 'size'"):
        session.override("liver", "size", "big")
    with pytest.raises(TaskSessionError, match="override of 'liver': a reason is required"):
        session.override("liver", "volumeMl", "  ")
    with pytest.raises(TaskSessionError, match="'Left lung' is required by .* and cannot be declared absent"):
        session.declareAbsent("lung_left")
    with pytest.raises(TaskSessionError, match="'Left lung' has no AI proposal"):
        session.accept("lung_left")
    assert session.unanswered() == ["lung_rads"]
    check = session.check()
    assert "question 'lung_rads' is not answered" in check.messages() and not check.ready


def test_an_ai_file_on_another_grid_is_refused_and_leaves_nothing(context, sample_dir, protocol, tmp_path):
    from MedAnnotAssistLib.core.labelio import write_seg_nrrd

    image = sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))
    cropped = image[:, :, :20]
    labels = np.zeros((20, *sitk.GetArrayViewFromImage(image).shape[1:]), np.uint8)
    wrong = write_seg_nrrd(tmp_path / "wrong.seg.nrrd", labels, Geometry.of(cropped), [(1, protocol.structures[0])])
    before = nodeIds(context.scene)
    expected = r"wrong.seg.nrrd: not on the case image.s grid: size 122 x 101 x 20, the image.s is 122 x 101 x 30"
    with pytest.raises(TaskSessionError, match=expected):
        TaskSession.open(context, protocol, sample_dir / "example_ct_sm.nii.gz", wrong)
    assert nodeIds(context.scene) == before


def test_a_labelmap_proposal_keeps_only_protocol_structures(context, sample_dir, protocol, total_labels):
    session = TaskSession.open(
        context,
        protocol,
        sample_dir / "example_ct_sm.nii.gz",
        sample_dir / "example_seg.nii.gz",
        label_names=total_labels,
        ai_provenance={"engine": "totalsegmentator", "version": "2.18.0"},
    )
    try:
        assert {"kidney_right", "spleen", "aorta"} <= set(session.dropped)
        assert not {"liver", "lung_upper_lobe_left", "lung_lower_lobe_right"} & set(session.dropped)
        assert _states(session) == {
            "lung_left": "suggested",
            "lung_right": "suggested",
            "nodule": "empty",
            "liver": "suggested",
        }
        assert session.structure("liver").ai["engine"] == "totalsegmentator"
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg.nii.gz")))
        assert np.array_equal(session.mask("lung_left"), np.isin(reference, (10, 11)))  # lobes join their lung
    finally:
        session.close()


def test_a_draft_resumes_where_the_reader_left(context, sample_dir, protocol, ai_liver, tmp_path):
    clock = ManualClock()
    first = TaskSession.open(context, protocol, sample_dir / "example_ct_sm.nii.gz", ai_liver[0], clock=clock)
    first.select("liver")
    clock.advance(30)
    eroded = ndimage.binary_erosion(first.mask("liver"))
    first.setMask("liver", eroded)
    first.answer("lung_rads", "3")
    first.override("lung_left", None, "lung bases only")
    path, draft = first.pack(tmp_path, require_ready=False)
    proposal = first.saveProposal(tmp_path / "case.ai.seg.nrrd")
    first.close()

    later = ManualClock(5000.0)
    second = TaskSession.open(
        context,
        protocol,
        sample_dir / "example_ct_sm.nii.gz",
        proposal,
        clock=later,
        segmentation_path=path,
        resume=json.loads(json.dumps(draft)),
    )
    try:
        assert second.state("liver") == "refined" and np.array_equal(second.mask("liver"), eroded)
        assert second.answers == {"lung_rads": "3"}
        assert second.overrides == [{"structure": "lung_left", "reason": "lung bases only"}]
        second.select("liver")
        later.advance(10)
        _, metadata = second.pack(tmp_path / "again", require_ready=False)
        assert metadata["timing"]["structures"]["liver"] == 40.0
        assert [e["event"] for e in metadata["segments"]["liver"]["history"]] == ["proposed", "edited", "final"]
        assert metadata["segments"]["liver"]["ai_vs_final"]["voxels_removed"] == int(ai_liver[1].sum() - eroded.sum())
    finally:
        second.close()


def test_open_the_dicom_series(context, sample_dir, protocol, tmp_path):
    """The 512 x 512 x 20 sample series opens as a volume, from its DICOM folder and from the NRRD the server
    stores for it; the time of each open is printed (the bench's target: 2 s)."""
    series = TaskSession.open(context, protocol, sample_dir / "example_ct_dicom", name="series")
    try:
        assert series.volumeNode.GetImageData().GetDimensions() == (512, 512, 20)
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg_dicom.nii.gz")))
        assert array.shape == (20, 512, 512)
        nrrd = tmp_path / "series.nrrd"
        from MedAnnotAssistLib.core.dicom.series import read_series

        sitk.WriteImage(read_series(sample_dir / "example_ct_dicom").image, str(nrrd), useCompression=True)
        stored = TaskSession.open(context, protocol, nrrd)
        try:
            masks, _ = segmentMasks(stored.segmentationNode)
            assert all(m.shape == (20, 512, 512) for m in masks.values())
            print(f"open: DICOM folder {series.open_seconds:.2f} s, NRRD {stored.open_seconds:.2f} s")
        finally:
            stored.close()
    finally:
        series.close()


def test_a_structure_drawn_over_another_is_written_as_8_bit_labels(opened, tmp_path):
    """A mask overlapping another structure's voxels goes to a layer of its own (a layer holds one label per
    voxel): that layer holds 8-bit labels, as Slicer's editor makes them and the server requires, not doubles."""
    from MedAnnotAssistLib.mrml.segmentation import saveSegmentation

    session, _ = opened
    grown = ndimage.binary_dilation(session.mask("liver"), iterations=2)
    session.setMask("lung_right", grown)  # over the liver
    segmentation = session.segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfLayers() == 2
    for layer in range(segmentation.GetNumberOfLayers()):
        assert segmentation.GetLayerDataObject(layer).GetScalarTypeAsString() == "unsigned char"
    path = saveSegmentation(session.segmentationNode, tmp_path / "case-1.seg.nrrd")
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkVectorUInt8
    assert np.array_equal(read_reader(path, session.protocol).mask("lung_right"), grown)
