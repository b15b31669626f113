"""The user guide's pictures of the scene, made by the workflow models on slicer-core against the real server and
drawn offscreen by Slicer's own slice and 3D views (``mrml.rendering``): the sample CT of a reader's case with the
AI's structures accepted, and the reviewer's disagreement map over the CT in a slice view and in volume rendering.

Reader A accepts TotalSegmentator's proposal (the case's AI pre-segmentation); reader B redraws every structure as
TotalSegmentator's fast model drew it (the sample's second real reader); the server computes the consensus, and
the reviewer's panel loads it. The pictures go to the test's folder; with ``MEDANNOT_USER_GUIDE_PICTURES=1`` also
to docs/images/ (``MEDANNOT_USER_GUIDE_PICTURES=1 .venv/bin/python -m pytest Testing/workflow -k pictures``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from MedAnnotAssistLib.core import provenance as prov
from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd
from MedAnnotAssistLib.core.protocol import bundled_protocol
from MedAnnotAssistLib.mrml.rendering import renderSliceViewToPng, renderThreeDViewToPng
from MedAnnotAssistLib.mrml.volumes import arrayFromVolume, ijkToRas
from Testing.readers import ABDOMEN_LABELS
from Testing.server.harness import unique
from Testing.task_case import AI_PROVENANCE

from .conftest import TIMEOUT_S, Study

USER_GUIDE_SWITCH = "MEDANNOT_USER_GUIDE_PICTURES"
USER_GUIDE_FOLDER = Path(__file__).resolve().parents[2] / "docs" / "images"
PICTURES = ("scene-slices.png", "scene-disagreement-slices.png", "scene-disagreement-3d.png")
REASON = "the sample CT holds 30 slices: this structure is cut at the scan's edge"
SIZE = (640, 480)


def write_ai(path: Path, sample_dir: Path, name: str = "example_seg") -> Path:
    """TotalSegmentator's labels of the sample as the case's AI pre-segmentation: the 13 structures of
    abdominal-organs, each with the engine's provenance (as ``medannot presegment --protocol`` writes it)."""
    protocol = bundled_protocol("abdominal-organs")
    image = sitk.ReadImage(str(sample_dir / f"{name}.nii.gz"))
    values = sitk.GetArrayFromImage(image)
    labels = np.zeros(values.shape, np.uint8)
    segments = []
    for index, (value, structure_id) in enumerate(ABDOMEN_LABELS.items(), start=1):
        labels[values == value] = index
        segments.append((index, protocol.structure(structure_id)))
    tags = {sid: prov.provenance_tags(AI_PROVENANCE, 0.9) for sid in ABDOMEN_LABELS.values()}
    return write_seg_nrrd(path, labels, Geometry.of(image), segments, protocol, segment_tags=tags)


def axial_offset(volume_node, k: int) -> float:
    """Slicer's axial slice offset (mm) of the volume's slice ``k``."""
    return float((ijkToRas(volume_node) @ [0.0, 0.0, float(k), 1.0])[2])


def annotate(study: Study, who, redraw=None):
    """Claim the case, accept every AI proposal (or set ``redraw``'s masks), give the reasons, submit."""
    desk = study.desk(who)
    assert desk.task.next_task()
    desk.wait_until(lambda: desk.task.session is not None, TIMEOUT_S)
    session, protocol = desk.task.session, desk.protocol
    for row in protocol.state.rows:
        if redraw is not None and row.structure_id in redraw:
            session.setMask(row.structure_id, redraw[row.structure_id])  # as the Segment Editor would
        elif row.actions["accept"].enabled:
            assert protocol.accept(row.structure_id)
    assert desk.questions.answer("image_quality", "adequate")
    protocol.check_now()
    for row in protocol.state.rows:
        for rule in row.blocking:
            assert protocol.override(row.structure_id, rule.rule, REASON)
    desk.wait_until(lambda: desk.task.state.actions["submit"].enabled, TIMEOUT_S)
    return desk


def make_pictures(queue, sample_dir: Path, folder: Path, work: Path) -> list[Path]:
    """The three scene pictures into ``folder``; a reading study on ``queue`` from start to the review, its files
    in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    admin = queue.admin
    project_id = admin.new_project(unique("guide"), "abdominal-organs", readers=2, review=True)
    users = {}
    for role, name in (("annotator", "a"), ("annotator", "b"), ("reviewer", "reviewer")):
        users[name] = admin.new_user(unique(name))
        admin.set_roles(project_id, users[name].name, role)
    case = admin.upload_case(project_id, sample_dir / "example_ct_sm.nii.gz", "abdomen-1")
    ai = write_ai(work / "abdomen-1.ai.seg.nrrd", sample_dir)
    with open(ai, "rb") as handle:
        files = {"segmentation": (ai.name, handle, "application/octet-stream")}
        url = f"/api/v1/projects/{project_id}/cases/{case['id']}/ai-segmentation"
        admin.ok(admin.put(url, files=files, data={"engine": "totalsegmentator"}))
    study = Study(queue, project_id, case["id"], admin, users["a"], users["b"], users["reviewer"], work)
    pictures = []
    try:
        # reader A: the AI's structures accepted, in the axial slice that holds the most of them
        a = annotate(study, study.a)
        session = a.task.session
        masks = np.stack([session.mask(sid) for sid in ABDOMEN_LABELS.values()])
        k = int(np.argmax(masks.any(axis=(2, 3)).sum(axis=0) * 1e9 + masks.sum(axis=(0, 2, 3))))  # most, then largest
        pictures.append(
            renderSliceViewToPng(
                a.context,
                folder / PICTURES[0],
                session.volumeNode,
                offset=axial_offset(session.volumeNode, k),
                size=SIZE,
            )
        )
        assert a.task.submit()
        a.wait_until(lambda: a.task.current is None, TIMEOUT_S)

        # reader B: the fast model's drawing of every structure
        fast = sitk.GetArrayFromImage(sitk.ReadImage(str(sample_dir / "example_seg_fast.nii.gz")))
        b = annotate(study, study.b, {sid: fast == value for value, sid in ABDOMEN_LABELS.items()})
        assert b.task.submit()
        b.wait_until(lambda: b.task.current is None, TIMEOUT_S)

        # the reviewer: the panel loads the readers, the consensus and the map (over the CT in slices and in 3D)
        reviewer = study.desk(study.reviewer)
        task, review = reviewer.task, reviewer.review

        def claimed() -> bool:
            if task.current is None and task.state.actions["next_task"].enabled:
                task.next_task()
            return review.state.stage == "ready"

        reviewer.wait_until(claimed, TIMEOUT_S)
        assert review.state.disagreement_in_slices and review.state.disagreement_in_3d
        scene = review.review
        window = bundled_protocol("abdominal-organs").windows[0]  # the reviewer reads the CT as the readers did
        display = scene.imageNode.GetDisplayNode()
        assert (display.GetWindow(), display.GetLevel()) == (window.width, window.center)
        assert review.show_consensus(False)  # the map alone over the CT, as with the panel's Consensus box off
        values = arrayFromVolume(scene.disagreementNode)
        k = int(np.argmax((values > 0).sum(axis=(1, 2))))
        pictures.append(
            renderSliceViewToPng(
                reviewer.context,
                folder / PICTURES[1],
                scene.imageNode,
                scene.disagreementNode,
                0.5,  # the panel's foreground opacity (ReviewModel.show_disagreement)
                offset=axial_offset(scene.imageNode, k),
                size=SIZE,
            )
        )
        pictures.append(
            renderThreeDViewToPng(
                reviewer.context,
                folder / PICTURES[2],
                size=SIZE,
                nodes=[scene.disagreementNode, scene.imageNode],
                elevation=60.0,  # from the front and well above: the 30-slice scan is a flat slab
            )
        )
    finally:
        study.close()
    return pictures


def pixels(path: Path) -> np.ndarray:
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(height, width, -1)[::-1, :, :3].astype(int)  # VTK's rows start at the bottom


def colour_present(image: np.ndarray, hex_colour: str, tolerance: int = 6) -> bool:
    """Some pixels hold the colour exactly (a segment's outline, drawn opaque)."""
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(image - rgb).max(axis=-1) <= tolerance).sum() >= 20)


def test_the_user_guides_scene_pictures(queue, sample_dir, tmp_path):
    folder = tmp_path / "pictures"
    made = make_pictures(queue, sample_dir, folder, tmp_path / "work")
    assert [path.name for path in made] == list(PICTURES)

    # the reader's slice: the CT in grey, most of the protocol's structures outlined in their colours
    slices = pixels(made[0])
    assert slices.shape == (SIZE[1], SIZE[0], 3)
    grey = (np.ptp(slices, axis=-1) <= 2) & (slices.max(axis=-1) > 30)
    assert grey.mean() > 0.2
    protocol = bundled_protocol("abdominal-organs")
    outlined = [
        s.id for s in protocol.structures if s.id in ABDOMEN_LABELS.values() and colour_present(slices, s.color)
    ]
    assert len(outlined) >= 8, outlined

    # the reviewer's slice: grey where the readers agree, warm where they differ
    review = pixels(made[1])
    warm = (review[..., 0] > review[..., 2] + 60) & (review[..., 0] > 100)
    assert 0.003 < warm.mean() < 0.15
    assert ((np.ptp(review, axis=-1) <= 2) & (review.max(axis=-1) > 30)).mean() > 0.2

    # the 3D view: the CT with the protocol's preset (CT-AAA: bone and contrast) and the map's orange to red
    volume = pixels(made[2])
    drawn = volume.max(axis=-1) > 10
    assert drawn.mean() > 0.05
    assert ((volume[..., 0] > 80) & (volume[..., 1] < volume[..., 0] * 0.6) & drawn).sum() > 200

    if os.environ.get(USER_GUIDE_SWITCH, "").lower() in ("1", "true", "yes"):
        USER_GUIDE_FOLDER.mkdir(parents=True, exist_ok=True)
        for path in made:
            shutil.copyfile(path, USER_GUIDE_FOLDER / path.name)
