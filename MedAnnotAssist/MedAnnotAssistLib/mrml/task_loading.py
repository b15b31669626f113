"""Bringing a task into the scene for ``TaskSession``: the image (a file or a DICOM series), the starting
segmentation (the AI's pre-segmentation or the reader's earlier work) checked against the image grid and
reduced to the protocol's structures, and the AI's proposal kept aside; and taking it all out again."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import slicer
import vtk

from ..core import provenance as prov
from ..core.protocol import Protocol
from .prepared_case import importProtocolLabels
from .presegment import proposalNode
from .protocol_segments import applyProtocol, structureSegments
from .scene import nodeIds, removeNodes
from .segmentation import getTag, loadSegmentation, newSegmentation, segmentIds
from .volumes import fileStem, ijkToRas, loadVolume, volumeFromArray

UNKNOWN_ENGINE = {"engine": "unknown", "version": ""}


class TaskSessionError(ValueError):
    """A request the task session cannot carry out; the message names the structure, question or file."""


def loadImage(context, path: str | Path, name: str):
    """The case image as a scalar volume: a file Slicer reads (NRRD, NIfTI, MHA), or a DICOM series folder
    or zip (read by ``core.dicom``, copied once into the volume)."""
    path = Path(path)
    if path.is_dir() or (path.is_file() and zipfile.is_zipfile(path)):
        import SimpleITK as sitk

        from ..core.dicom.series import read_series
        from ..core.labelio import Geometry

        try:
            image = read_series(path).image
        except ValueError as error:
            raise TaskSessionError(str(error)) from None
        return volumeFromArray(context, sitk.GetArrayViewFromImage(image), Geometry.of(image).ijk_to_ras, name)
    return loadVolume(context, path, name)


def loadStartingSegmentation(
    context, path: str | Path, protocol: Protocol, labelNames: Mapping[int, str] | None
) -> tuple[object, list[str]]:
    """A ``.seg.nrrd`` as it is, or a labelmap whose ``labelNames`` (label value -> structure name) say which
    protocol structure each label is (labels the protocol lacks are dropped: their names are returned)."""
    path = Path(path)
    if path.name.endswith(".seg.nrrd"):
        return loadSegmentation(context, path), []
    if labelNames is None:
        raise TaskSessionError(f"{path}: a labelmap needs label names (label value -> structure name)")
    return importProtocolLabels(context, path, labelNames, protocol, "label names")


def _segmentationGrid(segmentationNode) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """(IJK-to-RAS, dimensions) of the segmentation's reference grid, read without allocating voxels."""
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry = segmentationNode.GetSegmentation().GetConversionParameter(name)
    if not geometry:
        return None
    image = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image, False)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    ijk = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    extent = image.GetExtent()
    ijk[:3, 3] = (ijk @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    return ijk, tuple(extent[2 * a + 1] - extent[2 * a] + 1 for a in range(3))


def gridProblems(segmentationNode, volumeNode, tolerance: float = 1e-3) -> list[str]:
    """How the segmentation's grid differs from the image's (empty when they are the same)."""
    found = _segmentationGrid(segmentationNode)
    if found is None:
        return []
    ijk, dimensions = found
    expected = ijkToRas(volumeNode)
    image = volumeNode.GetImageData().GetDimensions()
    problems = []
    if tuple(dimensions) != tuple(image):
        problems.append(f"size {' x '.join(map(str, dimensions))}, the image's is {' x '.join(map(str, image))}")
    if not np.allclose(ijk[:3, :3], expected[:3, :3], atol=tolerance):
        problems.append("spacing or direction differ from the image's")
    if not np.allclose(ijk[:3, 3], expected[:3, 3], atol=tolerance * 10):
        problems.append(
            f"origin {np.round(ijk[:3, 3], 3).tolist()}, the image's is {np.round(expected[:3, 3], 3).tolist()}"
        )
    return problems


def keepProtocolSegments(segmentationNode, protocol: Protocol) -> list[str]:
    """Remove the segments that stand for no protocol structure (the server refuses them); their names."""
    keep = set(structureSegments(segmentationNode, protocol).values())
    segmentation = segmentationNode.GetSegmentation()
    dropped = []
    for segmentId in segmentIds(segmentationNode):
        if segmentId not in keep:
            dropped.append(segmentation.GetSegment(segmentId).GetName())
            segmentation.RemoveSegment(segmentId)
    return dropped


def aiSegments(segmentationNode, protocol: Protocol, created, provenance: Mapping | None) -> dict[str, dict]:
    """Structure id -> AI provenance of the segments an AI file proposed. A file whose segments carry AI tags
    proposed those; a file with none (a plain labelmap) proposed every segment it had, tagged here with
    ``provenance`` (engine ``unknown`` when not given)."""
    segmentation = segmentationNode.GetSegmentation()
    segments = {sid: seg for sid, seg in structureSegments(segmentationNode, protocol).items() if sid not in created}
    tagged = {sid: seg for sid, seg in segments.items() if getTag(segmentation.GetSegment(seg), prov.ENGINE_TAG)}
    if not tagged:
        tags = prov.provenance_tags({**UNKNOWN_ENGINE, **(provenance or {})}, (provenance or {}).get("confidence"))
        for segmentId in segments.values():
            for key, value in tags.items():
                segmentation.GetSegment(segmentId).SetTag(key, value)
        tagged = segments
    found = {}
    for structureId, segmentId in tagged.items():
        segment = segmentation.GetSegment(segmentId)
        found[structureId] = prov.read_provenance({key: getTag(segment, key) or "" for key in _AI_TAGS})
    return found


_AI_TAGS = (prov.ENGINE_TAG, prov.VERSION_TAG, prov.PARAMETERS_TAG, prov.TIME_TAG, prov.CONFIDENCE_TAG, prov.STATE_TAG)


def keepProposal(context, segmentationNode, volumeNode, source=None):
    """The hidden proposal node: a copy of ``source`` (another segmentation node, removed afterwards) or of
    the working node. Its segments without AI tags are no proposal; they stay, as removing a segment from a
    shared labelmap layer costs a pass over the whole layer."""
    proposal = proposalNode(context, segmentationNode, volumeNode)
    origin = source if source is not None else segmentationNode
    proposal.GetSegmentation().DeepCopy(origin.GetSegmentation())  # layers are copied whole, once
    proposal.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    return proposal


def applyWindow(volumeNode, protocol: Protocol) -> None:
    """The protocol's first window preset on the image (the reader's starting view)."""
    display = volumeNode.GetDisplayNode()
    if display is None or not protocol.windows or not display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        return
    window = protocol.windows[0]
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(window.width, window.center)


def caseName(imagePath: str | Path, taskInfo: Mapping) -> str:
    return str(taskInfo.get("case_name") or taskInfo.get("name") or fileStem(Path(imagePath)))


def _startingNode(context, path, protocol: Protocol, labelNames, volume):
    node, dropped = loadStartingSegmentation(context, path, protocol, labelNames)
    problems = gridProblems(node, volume)
    if problems:
        removeNodes(context.scene, [node.GetID()])
        raise TaskSessionError(f"{Path(path).name}: not on the case image's grid: {'; '.join(problems)}")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    return node, dropped


def _copyMissingAiTags(source, working, protocol: Protocol, proposals: dict) -> None:
    """A reader's starting file without AI tags gets the proposal's (state ``suggested``)."""
    have, give = structureSegments(working, protocol), structureSegments(source, protocol)
    for structureId in proposals:
        if structureId not in have:
            continue
        target = working.GetSegmentation().GetSegment(have[structureId])
        if getTag(target, prov.ENGINE_TAG):
            continue
        origin = source.GetSegmentation().GetSegment(give[structureId])
        for key in (prov.ENGINE_TAG, prov.VERSION_TAG, prov.PARAMETERS_TAG, prov.TIME_TAG, prov.CONFIDENCE_TAG):
            target.SetTag(key, getTag(origin, key) or "")
        target.SetTag(prov.STATE_TAG, prov.SUGGESTED)


@dataclass
class LoadedCase:
    """What ``loadCase`` put into the scene."""

    volumeNode: object
    segmentationNode: object
    proposals: dict[str, dict]  # structure id -> the AI's provenance, for the structures the AI proposed
    nodes: set[str]  # ids of every node it added
    dropped: list[str] = field(default_factory=list)  # starting segments that the protocol lacks (left out)
    sources: list[dict] = field(default_factory=list)  # where the proposals came from


def loadCase(
    context,
    protocol: Protocol,
    imagePath,
    name: str,
    aiPath=None,
    segmentationPath=None,
    labelNames: Mapping[int, str] | None = None,
    aiProvenance: Mapping | None = None,
) -> LoadedCase:
    """The image (protocol window applied), the working segmentation (``segmentationPath``: the reader's
    earlier work, else the AI's file, else empty) reduced to the protocol's segments, and the AI's proposal
    kept in the hidden proposal node. On error nothing stays in the scene."""
    scene = context.scene
    before = nodeIds(scene)
    try:
        volume = loadImage(context, imagePath, name)
        applyWindow(volume, protocol)
        start = segmentationPath or aiPath
        working, dropped = _startingNode(context, start, protocol, labelNames, volume) if start else (None, [])
        if working is None:
            working = newSegmentation(context, volume, f"{name} segmentation")
        working.SetName(f"{name} segmentation")
        created = set(applyProtocol(working, protocol).created)
        dropped += keepProtocolSegments(working, protocol)
        proposals, sources = {}, []
        if aiPath and segmentationPath:
            ai, _ = _startingNode(context, aiPath, protocol, labelNames, volume)
            aiCreated = set(applyProtocol(ai, protocol).created)
            keepProtocolSegments(ai, protocol)
            proposals = aiSegments(ai, protocol, aiCreated, aiProvenance)
            keepProposal(context, working, volume, source=ai)
            _copyMissingAiTags(ai, working, protocol, proposals)
            removeNodes(scene, [ai.GetID()])
        elif aiPath:
            proposals = aiSegments(working, protocol, created, aiProvenance)
            keepProposal(context, working, volume)
        if aiPath:
            sources.append({"source": "file", "file": Path(aiPath).name, "structures": sorted(proposals)})
    except Exception:
        removeNodes(scene, nodeIds(scene) - before)
        raise
    return LoadedCase(volume, working, proposals, nodeIds(scene) - before, dropped, sources)
