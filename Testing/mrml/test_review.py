"""ReviewSession on slicer-core: the real readers loaded as segmentation nodes, the consensus node, the
disagreement volume, the metrics table and a volume rendering of the disagreement over the CT."""

from __future__ import annotations

import numpy as np
import pytest

from MedAnnotAssistLib.core.consensus import compute_consensus
from MedAnnotAssistLib.core.consensus_files import read_readers
from MedAnnotAssistLib.core.protocol import bundled_protocol
from MedAnnotAssistLib.mrml.protocol_segments import structureSegments
from MedAnnotAssistLib.mrml.review import ReviewSession, geometryFromIjkToRas, ijkToRasFromGeometry
from MedAnnotAssistLib.mrml.segmentation import segmentMasks
from MedAnnotAssistLib.mrml.volumes import arrayFromVolume, ijkToRas, loadVolume

from ..readers import ABDOMEN_LABELS
from .test_rendering import _foreground, _pixels, _warm

PROTOCOL = bundled_protocol("abdominal-organs")


@pytest.fixture
def session(context, sample_dir):
    ct = loadVolume(context, sample_dir / "example_ct_sm.nii.gz", name="CT")
    review = ReviewSession(context, PROTOCOL, imageNode=ct)
    for name in ("example_seg", "example_seg_fast"):
        review.addReaderFile(sample_dir / f"{name}.nii.gz", ABDOMEN_LABELS, name=name)
    return review


def test_review_session_equals_the_file_based_consensus(session, sample_dir):
    result = session.compute()
    files = [sample_dir / "example_seg.nii.gz", sample_dir / "example_seg_fast.nii.gz"]
    expected = compute_consensus(read_readers(files, PROTOCOL, ABDOMEN_LABELS), PROTOCOL)
    # applyProtocol gave each reader every protocol segment; the one nobody drew is agreed absent.
    extra = [s for s in result.structures if s.structure.id not in {e.structure.id for e in expected.structures}]
    assert [(s.structure.id, s.verdict, s.empty_readers) for s in extra] == [
        ("superior_mesenteric_artery", "agreed", ["example_seg", "example_seg_fast"])
    ]
    ours_by_id = {s.structure.id: s for s in result.structures}
    for theirs in expected.structures:
        ours = ours_by_id[theirs.structure.id]
        assert [p.as_dict() for p in ours.pairwise] == [p.as_dict() for p in theirs.pairwise], ours.structure.id
    assert np.array_equal(arrayFromVolume(session.disagreementNode), expected.disagreement)

    segments = structureSegments(session.consensusNode, PROTOCOL)
    assert set(segments) == {s.structure.id for s in result.structures}
    masks, _ = segmentMasks(session.consensusNode, [segments["liver"]])
    assert np.array_equal(masks[segments["liver"]], expected.structure("liver").consensus_full(expected.labels.shape))

    table = session.metricsTableNode.GetTable()
    assert table.GetNumberOfRows() == len(result.structures)  # one pair per structure with two readers
    assert table.GetColumnByName("Structure").GetValue(0) == "Liver"
    assert table.GetColumnByName("Dice").GetValue(0) == pytest.approx(result.structures[0].pairwise[0].dice)
    assert table.GetColumnByName("Verdict").GetValue(0) == "agreed"


def test_ijk_to_ras_and_itk_geometry_round_trip(session):
    node = session.imageNode
    shape = arrayFromVolume(node).shape
    geometry = geometryFromIjkToRas(ijkToRas(node), shape)
    assert geometry.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert np.allclose(ijkToRasFromGeometry(geometry), ijkToRas(node))


def test_disagreement_is_volume_rendered_over_the_ct(session, tmp_path):
    session.compute()
    display = session.showDisagreementIn3D()
    assert display.GetVisibility()
    pixels = _pixels(session.renderPng(tmp_path / "disagreement.png", size=(300, 300)))
    foreground = _foreground(pixels)
    assert foreground.mean() > 0.01  # the map shows
    assert _warm(pixels)[foreground].mean() > 0.9  # in the yellow-to-red ramp


def test_identical_readers_render_blank(context, sample_dir, tmp_path):
    review = ReviewSession(context, PROTOCOL)
    for name in ("first", "second"):
        review.addReaderFile(sample_dir / "example_seg.nii.gz", ABDOMEN_LABELS, name=name)
    result = review.compute()
    assert result.disagreement.max() == 0
    review.showDisagreementIn3D()
    assert _foreground(_pixels(review.renderPng(tmp_path / "blank.png", size=(200, 200)))).mean() == 0


def test_the_servers_result_in_the_slice_views_an_edited_copy_and_close(context, sample_dir, tmp_path):
    """The consensus and map files (as the server stores them) load into the review; the map lies over the CT
    in every slice view; the edited final starts as a copy of the consensus; close leaves the scene as before."""
    from MedAnnotAssistLib.mrml.review import showInSliceViews
    from MedAnnotAssistLib.mrml.scene import nodeIds
    from MedAnnotAssistLib.mrml.segmentation import saveSegmentation
    from MedAnnotAssistLib.mrml.volumes import saveVolume

    views = [context.scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]  # Slicer's layout
    ct = loadVolume(context, sample_dir / "example_ct_sm.nii.gz")
    before = nodeIds(context.scene)  # the image is the caller's: the review's nodes are the others
    computed = ReviewSession(context, PROTOCOL, imageNode=ct)
    for name in ("example_seg", "example_seg_fast"):
        computed.addReaderFile(sample_dir / f"{name}.nii.gz", ABDOMEN_LABELS, name=name)
    computed.compute()
    consensus = saveSegmentation(computed.consensusNode, tmp_path / "consensus.seg.nrrd")
    disagreement = saveVolume(computed.disagreementNode, tmp_path / "disagreement.nrrd")
    expected = arrayFromVolume(computed.disagreementNode).copy()
    masks, _ = segmentMasks(computed.consensusNode)
    computed.close()
    assert nodeIds(context.scene) == before

    review = ReviewSession(context, PROTOCOL, imageNode=ct)
    review.loadResult(consensus, disagreement)
    assert np.array_equal(arrayFromVolume(review.disagreementNode), expected)
    assert review.disagreementNode.GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeWarm1"
    liver = structureSegments(review.consensusNode, PROTOCOL)["liver"]
    assert segmentMasks(review.consensusNode, [liver])[0][liver].sum() == max(m.sum() for m in masks.values())
    assert showInSliceViews(context.scene, review.disagreementNode, 0.4, review.imageNode) == 3
    for view in views:
        assert view.GetForegroundVolumeID() == review.disagreementNode.GetID()
        assert view.GetBackgroundVolumeID() == review.imageNode.GetID() and view.GetForegroundOpacity() == 0.4
    edited = review.editedCopy()
    assert edited is review.editedCopy() and not review.consensusNode.GetDisplayNode().GetVisibility()
    copy = structureSegments(edited, PROTOCOL)["liver"]
    assert np.array_equal(segmentMasks(edited, [copy])[0][copy], segmentMasks(review.consensusNode, [liver])[0][liver])
    showInSliceViews(context.scene, None, 0.0)
    assert all(view.GetForegroundVolumeID() is None for view in views)
    review.close()
    assert nodeIds(context.scene) == before


def _most_disagreement_offset(session) -> float:
    """The axial slice offset (mm) where the map has the most voxels above zero."""
    values = arrayFromVolume(session.disagreementNode)
    k = int(np.argmax((values > 0).sum(axis=(1, 2))))
    return float((ijkToRas(session.disagreementNode) @ [0, 0, k, 1])[2])


def test_the_map_over_the_ct_in_a_slice_view_leaves_agreement_untouched(session, tmp_path):
    """In the slice views the map is a film over the CT only where the readers differ: where they agree the CT
    shows as it is (not tinted), and a split of two readers is drawn red."""
    from MedAnnotAssistLib.mrml.rendering import renderSliceViewToPng

    session.compute()
    ct = session.imageNode
    ct.CreateDefaultDisplayNodes()
    offset = _most_disagreement_offset(session)
    alone = _pixels(renderSliceViewToPng(session.context, tmp_path / "ct.png", ct, offset=offset, size=(300, 300)))
    over = _pixels(
        renderSliceViewToPng(
            session.context, tmp_path / "map.png", ct, session.disagreementNode, 0.5, offset=offset, size=(300, 300)
        )
    )
    changed = np.abs(over - alone).max(axis=-1) > 8
    assert 0.002 < changed.mean() < 0.1  # the readers' borders, not the whole slice
    red, green, blue = (over[..., c][changed] for c in range(3))
    assert ((red > green + 30) & (red > blue + 30)).mean() > 0.9


def test_a_two_reader_split_is_drawn_bright_in_3d(session, tmp_path):
    """With two readers the map is 0.5 wherever they split, the most a consensus allows: the ramp's red."""
    session.compute()
    assert float(arrayFromVolume(session.disagreementNode).max()) == 0.5
    session.showDisagreementIn3D()
    pixels = _pixels(session.renderPng(tmp_path / "split.png", size=(300, 300)))
    red, green = pixels[..., 0], pixels[..., 1]
    assert ((red > 60) & (green < red * 0.6)).sum() > 0.1 * _foreground(pixels).sum()  # orange to red
    assert (red > 100).sum() > 100  # not a faint haze (the old ramp, made for 1.0 at its red: none)
