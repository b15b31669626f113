"""AI pre-segmentation in a Slicer scene: an engine's result becomes segments with provenance, the expert
accepts, rejects or refines each one, and the AI-vs-final statistics are computed at submission.

The AI's proposal is kept unchanged in a hidden segmentation node referenced from the working one
(role ``MedAnnotAssist.AIProposal``), so what the human changed can always be measured.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk

from ..core import provenance as prov
from ..core.engines.base import EngineInfo, EngineResult, match_protocol
from ..core.protocol import Protocol, Structure
from .protocol_segments import STRUCTURE_TAG, applyProtocol, structureSegments
from .segmentation import getTag, newSegmentation, segmentIds, segmentMasks, setSegmentMask
from .volumes import arrayFromVolume, ijkToRas, imageDataToArray, volumeFromArray

PROPOSAL_ROLE = "MedAnnotAssist.AIProposal"


_TAG_KEYS = (prov.ENGINE_TAG, prov.VERSION_TAG, prov.PARAMETERS_TAG, prov.TIME_TAG, prov.CONFIDENCE_TAG, prov.STATE_TAG)


def _tags(segment) -> dict[str, str]:
    """Our AI tags of a segment."""
    values = {key: getTag(segment, key) for key in _TAG_KEYS}
    return {key: value for key, value in values.items() if value is not None}


def _structures(info: EngineInfo, result: EngineResult, protocol: Protocol | None) -> dict[str, Structure]:
    """Engine structure id -> the structure its segment stands for (the protocol's where codes match)."""
    matched = match_protocol(info, protocol) if protocol is not None else {}
    produced = set(result.names.values())
    return {s.id: matched.get(s.id, s.as_structure()) for s in info.structures if s.id in produced}


def applyEngineResult(
    context, volumeNode, info: EngineInfo, result: EngineResult, segmentationNode=None, protocol=None
):
    """Put an engine's proposal into ``segmentationNode`` (created on ``volumeNode`` if None): one segment per
    structure, its mask, its provenance tags and state ``suggested``. Returns the segmentation node."""
    if result.labels.shape != arrayFromVolume(volumeNode).shape:
        raise ValueError(f"engine labels {result.labels.shape} are not on the volume's grid")
    if segmentationNode is None:
        segmentationNode = newSegmentation(context, volumeNode, f"{volumeNode.GetName()} segmentation")
    if protocol is not None:
        applyProtocol(segmentationNode, protocol)
    structures = _structures(info, result, protocol)
    proposal = proposalNode(context, segmentationNode, volumeNode)
    bySegment = structureSegments(segmentationNode, protocol) if protocol is not None else {}
    segmentation = segmentationNode.GetSegmentation()
    for engineId, structure in structures.items():
        segmentId = bySegment.get(structure.id) or segmentByStructureTag(segmentationNode, structure.id)
        if segmentId is None:
            segmentId = segmentation.AddEmptySegment(structure.id, structure.name, list(structure.color_rgb))
            segmentation.GetSegment(segmentId).SetTag(STRUCTURE_TAG, structure.id)
        mask = result.mask(engineId)
        setSegmentMask(segmentationNode, segmentId, mask)
        tags = prov.provenance_tags(result.provenance, result.confidence.get(engineId))
        for key, value in tags.items():
            segmentation.GetSegment(segmentId).SetTag(key, value)
        setProposalMask(proposal, structure, mask)
    segmentationNode.SetAttribute("MedAnnotAssist.AI.Uncertainty", f"{result.uncertainty:.4f}")
    return segmentationNode


def proposalNode(context, segmentationNode, volumeNode):
    """The hidden node holding the AI's proposal of ``segmentationNode`` (created on first use)."""
    node = segmentationNode.GetNodeReference(PROPOSAL_ROLE)
    if node is None:
        node = newSegmentation(context, volumeNode, f"{segmentationNode.GetName()} AI proposal")
        node.SetHideFromEditors(True)
        if node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetVisibility(False)
        segmentationNode.SetNodeReferenceID(PROPOSAL_ROLE, node.GetID())
    return node


def setProposalMask(proposal, structure: Structure, mask: np.ndarray) -> None:
    """Record ``mask`` as the AI's proposal of ``structure`` in the proposal node."""
    proposalId = segmentByStructureTag(proposal, structure.id)
    if proposalId is None:
        proposalId = proposal.GetSegmentation().AddEmptySegment(structure.id, structure.name)
        proposal.GetSegmentation().GetSegment(proposalId).SetTag(STRUCTURE_TAG, structure.id)
    setSegmentMask(proposal, proposalId, mask)


def segmentByStructureTag(segmentationNode, structureId: str) -> str | None:
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in segmentIds(segmentationNode):
        if getTag(segmentation.GetSegment(segmentId), STRUCTURE_TAG) == structureId:
            return segmentId
    return None


def _aiSegment(segmentationNode, structureId: str):
    segmentId = segmentByStructureTag(segmentationNode, structureId)
    if segmentId is None:
        raise KeyError(f"no segment for structure '{structureId}'")
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if getTag(segment, prov.ENGINE_TAG) is None:
        raise ValueError(f"segment '{segment.GetName()}' was not proposed by an engine")
    return segmentId, segment


def reviewState(segmentationNode, structureId: str) -> str:
    return getTag(_aiSegment(segmentationNode, structureId)[1], prov.STATE_TAG) or prov.SUGGESTED


def accept(segmentationNode, structureId: str) -> None:
    """Keep the AI's segment as it is (edits made afterwards turn it into ``refined`` at submission)."""
    _aiSegment(segmentationNode, structureId)[1].SetTag(prov.STATE_TAG, prov.ACCEPTED)


def reject(segmentationNode, structureId: str) -> None:
    """Remove the AI's segment content; the proposal stays recorded for the statistics."""
    segmentId, segment = _aiSegment(segmentationNode, structureId)
    masks, _ = segmentMasks(segmentationNode, [segmentId])
    setSegmentMask(segmentationNode, segmentId, np.zeros_like(masks[segmentId]))
    segment.SetTag(prov.STATE_TAG, prov.REJECTED)


def markRefined(segmentationNode, structureId: str) -> None:
    _aiSegment(segmentationNode, structureId)[1].SetTag(prov.STATE_TAG, prov.REFINED)


def aiProvenance(segmentationNode, structureId: str) -> dict | None:
    segmentId = segmentByStructureTag(segmentationNode, structureId)
    if segmentId is None:
        return None
    return prov.read_provenance(_tags(segmentationNode.GetSegmentation().GetSegment(segmentId)))


def aiVersusFinal(segmentationNode) -> dict[str, dict]:
    """Per AI structure: recorded provenance, effective state, Dice and HD95 of proposal vs final, voxels
    added and removed. Structures the engine did not propose are left out."""
    proposal = segmentationNode.GetNodeReference(PROPOSAL_ROLE)
    if proposal is None:
        return {}
    proposalIds = {getTag(proposal.GetSegmentation().GetSegment(s), STRUCTURE_TAG): s for s in segmentIds(proposal)}
    proposalMasks, ijk = segmentMasks(proposal, list(proposalIds.values()))
    spacing = tuple(np.linalg.norm(np.asarray(ijk)[:3, :3], axis=0)[::-1])
    statistics = {}
    for structureId, proposalId in proposalIds.items():
        segmentId = segmentByStructureTag(segmentationNode, structureId)
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentId else None
        final = segmentMasks(segmentationNode, [segmentId])[0][segmentId] if segment is not None else None
        if final is None or final.shape != proposalMasks[proposalId].shape:
            final = np.zeros_like(proposalMasks[proposalId])
        recorded = prov.read_provenance(_tags(segment)) if segment is not None else None
        state = recorded["state"] if recorded else prov.REJECTED
        row = prov.ai_vs_final(proposalMasks[proposalId], final, spacing, state)
        row["provenance"] = recorded
        statistics[structureId] = row
    return statistics


def growFromSeeds(context, volumeNode, seedLabels: np.ndarray, distancePenalty: float = 0.0) -> np.ndarray:
    """Slicer's "Grow from seeds" (``vtkImageGrowCutSegment``) on ``volumeNode``: ``seedLabels`` is a (k, j, i)
    labelmap of the expert's strokes (0 = unlabelled, one value per structure, one for background); returns
    the grown labelmap."""
    intensity = arrayFromVolume(volumeNode)
    if seedLabels.shape != intensity.shape:
        raise ValueError(f"seed labels {seedLabels.shape} are not on the volume's grid {intensity.shape}")
    if not np.any(seedLabels):
        raise ValueError("seed labels: no seed strokes")
    seeds = volumeFromArray(context, seedLabels.astype(np.int16), ijkToRas(volumeNode), "seeds", labelmap=True)
    try:
        grow = slicer.vtkImageGrowCutSegment()
        grow.SetIntensityVolume(volumeNode.GetImageData())
        grow.SetSeedLabelVolume(seeds.GetImageData())
        grow.SetDistancePenalty(distancePenalty)
        grow.Update()
        output = vtk.vtkImageData()
        output.DeepCopy(grow.GetOutput())
        return imageDataToArray(output).copy()
    finally:
        context.scene.RemoveNode(seeds)


def imageFromVolume(volumeNode):
    """A SimpleITK copy of a scalar volume node (voxels and geometry) for the core engines."""
    import SimpleITK as sitk

    from .review import geometryFromIjkToRas

    array = arrayFromVolume(volumeNode)
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    geometryFromIjkToRas(ijkToRas(volumeNode), array.shape).apply(image)
    return image
