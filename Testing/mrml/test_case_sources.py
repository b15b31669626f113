"""Local mode without a server: a reading list from a folder or a CSV file, moved through with next and
previous, each case opened as a task session, its result written to the output folder, everything resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from MedAnnotAssistLib.core.activity import ManualClock
from MedAnnotAssistLib.core.engines import get_engine
from MedAnnotAssistLib.core.labelio import read_reader
from MedAnnotAssistLib.mrml.case_sources import CaseSourceError, CsvCaseSource, FolderCaseSource
from MedAnnotAssistLib.mrml.task_loading import nodeIds
from MedAnnotAssistLib.mrml.task_session import NotReadyError
from Testing.task_case import chest_protocol, write_ai_liver


@pytest.fixture(scope="module")
def protocol():
    return chest_protocol()


@pytest.fixture
def folder(tmp_path, sample_dir, protocol):
    """case-a (with the AI's liver), case-b (no AI), series-c (a DICOM series folder)."""
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "case-a.nii.gz").symlink_to(sample_dir / "example_ct_sm.nii.gz")
    write_ai_liver(cases / "case-a.seg.nrrd", sample_dir, protocol)
    (cases / "case-b.nii.gz").symlink_to(sample_dir / "example_ct_sm.nii.gz")
    (cases / "series-c").symlink_to(sample_dir / "example_ct_dicom", target_is_directory=True)
    (cases / "notes.txt").write_text("not an image")
    return cases


def _finish(session) -> None:
    """Meet the gate of the chest protocol: the CT engine's lungs accepted with a reason, Lung-RADS answered."""
    session.runEngine(get_engine("ct"))
    for lung in ("lung_left", "lung_right"):
        session.accept(lung)
        session.override(lung, "volumeMl", "only the lung bases are in this image")
    session.declareAbsent("nodule")
    session.answer("lung_rads", "1")


def test_a_folder_is_read_case_by_case_and_resumes(context, folder, tmp_path, protocol):
    out = tmp_path / "results"
    source = FolderCaseSource(folder, out)
    assert [c.name for c in source] == ["case-a", "case-b", "series-c"]
    assert source.current.ai_segmentation == folder / "case-a.seg.nrrd" and source.cases[1].ai_segmentation is None
    assert source.status() == "new"

    before = nodeIds(context.scene)
    clock = ManualClock()
    session = source.open(context, protocol, clock)
    assert session.state("liver") == "suggested"
    session.select("liver")
    clock.advance(25)
    eroded = ndimage.binary_erosion(session.mask("liver"))
    session.setMask("liver", eroded)
    with pytest.raises(NotReadyError, match="Left lung: required structure is empty"):
        source.save(session)  # done needs the gate
    seg, metadata = source.save(session, done=False)  # a draft is kept as it is
    session.close()
    assert nodeIds(context.scene) == before
    files = source.results()
    assert seg == files.segmentation == out / "case-a.seg.nrrd" and files.proposal.is_file()
    assert json.loads(files.metadata.read_text())["case"]["status"] == "draft" and source.status() == "draft"
    assert np.array_equal(read_reader(seg, protocol).mask("liver"), eroded)

    assert source.next().name == "case-b" and source.next().name == "series-c"
    assert source.next() is None and source.current.name == "series-c"
    assert source.previous().name == "case-b"

    again = FolderCaseSource(folder, out)  # a new start on the same results folder
    assert again.current.name == "case-b"
    assert again.goto("case-a").name == "case-a"
    later = ManualClock(1e6)
    session = again.open(context, protocol, later)  # the draft comes back: edit, proposal, times
    try:
        assert session.state("liver") == "refined" and np.array_equal(session.mask("liver"), eroded)
        session.select("liver")
        later.advance(5)
        _finish(session)
        _, metadata = again.save(session)
    finally:
        session.close()
    assert metadata["timing"]["structures"]["liver"] == 30.0
    assert metadata["segments"]["liver"]["ai_vs_final"]["voxels_removed"] > 0
    assert [e["event"] for e in metadata["segments"]["liver"]["history"]] == ["proposed", "edited", "final"]
    assert again.status() == "done"
    state = json.loads((out / "reading-list.json").read_text())
    assert state["cases"] == {"case-a": "done", "case-b": "new", "series-c": "new"}
    assert again.nextUnfinished().name == "case-b"


def test_a_csv_reading_list(context, tmp_path, sample_dir, protocol, total_labels):
    write_ai_liver(tmp_path / "ai-liver.seg.nrrd", sample_dir, protocol)
    (tmp_path / "ct.nii.gz").symlink_to(sample_dir / "example_ct_sm.nii.gz")
    (tmp_path / "reader.nii.gz").symlink_to(sample_dir / "example_seg_fast.nii.gz")
    listing = tmp_path / "list.csv"
    listing.write_text(
        "case,scan,mask,ai\n"
        "first,ct.nii.gz,,ai-liver.seg.nrrd\n"
        f"second,{sample_dir / 'example_ct_sm.nii.gz'},reader.nii.gz,\n"
    )
    columns = {"name": "case", "image": "scan", "segmentation": "mask", "ai_segmentation": "ai"}
    source = CsvCaseSource(listing, tmp_path / "out", columns=columns, label_names=total_labels)
    assert [(c.name, c.ai_segmentation is not None, c.segmentation is not None) for c in source] == [
        ("first", True, False),
        ("second", False, True),
    ]
    source.next()
    session = source.open(context, protocol)  # the second case starts from another reader's labelmap
    try:
        assert session.structure("liver").ai is None
        assert {s.structure_id: s.state for s in session.structures} == {
            "lung_left": "refined",
            "lung_right": "refined",
            "nodule": "empty",
            "liver": "refined",
        }
    finally:
        session.close()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("scan\nct.nii.gz\n", r"list.csv: no column 'image' \(columns: scan\)"),
        ("image\n\n", "no cases"),
        ("image,name\n,x\n", r"list.csv:2: column 'image' is empty"),
        ("image\nmissing.nii.gz\n", r"list.csv:2: column 'image': .*missing.nii.gz: no such file"),
        ("image,ai_segmentation\nct.nii.gz,nope.seg.nrrd\n", r"list.csv:2: column 'ai_segmentation': .*nope"),
        ("image,name\nct.nii.gz,a\nct.nii.gz,a\n", "case names used more than once: a"),
    ],
)
def test_bad_reading_lists_name_the_line_and_column(tmp_path, sample_dir, text, message):
    (tmp_path / "ct.nii.gz").symlink_to(sample_dir / "example_ct_sm.nii.gz")
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(CaseSourceError, match=message):
        CsvCaseSource(tmp_path / "list.csv", tmp_path / "out")


def test_bad_sources(tmp_path):
    with pytest.raises(CaseSourceError, match="nowhere: no such folder"):
        FolderCaseSource(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(CaseSourceError, match="columns: unknown keys mask"):
        (tmp_path / "list.csv").write_text("image\nx\n")
        CsvCaseSource(tmp_path / "list.csv", tmp_path / "out", columns={"mask": "m"})
