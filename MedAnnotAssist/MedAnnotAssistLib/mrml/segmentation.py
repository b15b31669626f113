"""Segmentation nodes: create, import labelmaps, read masks, save and load ``.seg.nrrd``.

``slicer.util.arrayFromSegmentBinaryLabelmap`` needs the desktop application; this module does
the same with the Segmentations logic and oriented image data, on slicer-core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import slicer
import vtk

from .volumes import imageDataToArray, loadVolume

BINARY_LABELMAP = "Binary labelmap"


class SegmentationReadError(OSError):
    """A segmentation file that Slicer could not load."""


def newSegmentation(context, referenceVolume, name: str = "Segmentation"):
    """An empty segmentation node on the grid of ``referenceVolume``, with display nodes."""
    node = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolume)
    return node


def segmentIds(segmentationNode) -> list[str]:
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def getTag(segment, tag: str) -> str | None:
    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else None


def importLabelmap(context, labelmapNode, names: Mapping[int, str] | None = None, segmentationNode=None):
    """Every label of a labelmap volume as a segment; ``names`` maps label values to segment names.

    Labels present in the image but not in ``names`` keep Slicer's default name ``Label_<value>``.
    """
    if segmentationNode is None:
        segmentationNode = newSegmentation(context, labelmapNode, labelmapNode.GetName())
    before = set(segmentIds(segmentationNode))
    if not context.segmentationsLogic.ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode):
        raise SegmentationReadError(f"could not import labelmap {labelmapNode.GetName()} into a segmentation")
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in segmentIds(segmentationNode):
        if segmentId in before:
            continue
        segment = segmentation.GetSegment(segmentId)
        label = segment.GetLabelValue()
        if names and label in names:
            segment.SetName(names[label])
        segment.SetTag("MedAnnotAssist.SourceLabel", str(label))
    return segmentationNode


def importLabelmapFile(context, path: str | Path, names: Mapping[int, str] | None = None, name: str | None = None):
    """Load a NIfTI/NRRD labelmap file and import its labels as segments (the labelmap node is removed)."""
    labelmap = loadVolume(context, path, name=name, labelmap=True)
    try:
        return importLabelmap(context, labelmap, names)
    finally:
        context.scene.RemoveNode(labelmap)


def referenceGeometry(segmentationNode):
    """The segmentation's reference grid as an allocated, zero-filled 8-bit vtkOrientedImageData: a binary
    labelmap as Slicer's editor makes it (a mask set from it that needs a layer of its own gets an 8-bit one)."""
    segmentation = segmentationNode.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    geometry = segmentation.GetConversionParameter(name)
    if not geometry:
        raise ValueError(f"segmentation {segmentationNode.GetName()} has no reference image geometry")
    image = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image, True, vtk.VTK_UNSIGNED_CHAR, 1)
    image.GetPointData().GetScalars().Fill(0)
    return image


def orientedImageIjkToRas(image) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    ijkToRas = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    extent = image.GetExtent()
    # The array's first voxel is the extent's minimum, which need not be index 0.
    ijkToRas[:3, 3] = (ijkToRas @ np.array([extent[0], extent[2], extent[4], 1.0]))[:3]
    return ijkToRas


def segmentLayers(
    segmentationNode, ids: Iterable[str] | None = None
) -> tuple[list[np.ndarray], dict[str, tuple[int, int]], np.ndarray]:
    """The label layers holding segments ``ids`` on the reference grid ((k, j, i) arrays, one per shared layer,
    resampled once each), where each segment lives in them ((layer, label value)), and the grid's IJK-to-RAS."""
    reference = referenceGeometry(segmentationNode)
    segmentation = segmentationNode.GetSegmentation()
    layers: list[np.ndarray] = []
    where: dict[str, tuple[int, int]] = {}
    position: dict[int, int] = {}  # Slicer's layer index -> position in ``layers``
    for segmentId in ids if ids is not None else segmentIds(segmentationNode):
        segment = segmentation.GetSegment(segmentId)
        if segment is None:
            raise KeyError(f"segmentation {segmentationNode.GetName()} has no segment '{segmentId}'")
        index = segmentation.GetLayerIndex(segmentId)
        if index < 0 or index not in position:
            layer = slicer.vtkOrientedImageData()
            slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
                segmentationNode, segmentId, layer, True
            )
            resampled = slicer.vtkOrientedImageData()
            slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                layer, reference, resampled, False, True
            )
            position[index] = len(layers)
            layers.append(imageDataToArray(resampled))  # the array holds the voxels' buffer alive
        # Segments share labelmap layers: a segment is the voxels holding its label value.
        where[segmentId] = (position[index], segment.GetLabelValue())
    return layers, where, orientedImageIjkToRas(reference)


def segmentMasks(segmentationNode, ids: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Boolean (k, j, i) masks of segments on the reference grid, and that grid's IJK-to-RAS matrix."""
    layers, where, ijkToRas = segmentLayers(segmentationNode, ids)
    return {segmentId: layers[layer] == value for segmentId, (layer, value) in where.items()}, ijkToRas


def setSegmentMask(segmentationNode, segmentId: str, mask: np.ndarray) -> None:
    """Replace a segment's content with a boolean (k, j, i) mask on the reference grid."""
    image = referenceGeometry(segmentationNode)
    array = imageDataToArray(image)
    if array.shape != mask.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the reference grid {array.shape}")
    array[...] = mask.astype(array.dtype)
    image.Modified()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, logic.MODE_REPLACE, image.GetExtent()):
        raise RuntimeError(f"could not set the content of segment '{segmentId}'")


def _allocateEmptySegments(segmentationNode) -> None:
    """Give empty segments the full reference grid, so the file has the image's geometry."""
    segmentation = segmentationNode.GetSegmentation()
    empty = []
    for segmentId in segmentIds(segmentationNode):
        labelmap = segmentation.GetSegment(segmentId).GetRepresentation(BINARY_LABELMAP)
        extent = labelmap.GetExtent() if labelmap is not None else (0, -1, 0, -1, 0, -1)
        if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
            empty.append(segmentId)
    if not empty:
        return
    image = referenceGeometry(segmentationNode)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    for segmentId in empty:
        logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, logic.MODE_REPLACE, image.GetExtent())


def saveSegmentation(segmentationNode, path: str | Path) -> Path:
    """Write a ``.seg.nrrd`` that keeps names, colours, tags (terminology, status) and the reference grid."""
    path = Path(path)
    if not path.name.endswith(".seg.nrrd"):
        raise ValueError(f"{path}: a segmentation file name must end with .seg.nrrd")
    path.parent.mkdir(parents=True, exist_ok=True)
    _allocateEmptySegments(segmentationNode)
    storage = segmentationNode.CreateDefaultStorageNode()
    storage.SetCropToMinimumExtent(False)
    storage.SetFileName(str(path))
    if not storage.WriteData(segmentationNode):
        raise OSError(f"{path}: Slicer could not write segmentation {segmentationNode.GetName()}")
    return path


def loadSegmentation(context, path: str | Path, name: str | None = None):
    """Read a ``.seg.nrrd`` into a new segmentation node."""
    path = Path(path)
    if not path.is_file():
        raise SegmentationReadError(f"{path}: no such file")
    node = context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or path.name.removesuffix(".seg.nrrd"))
    storage = context.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        context.scene.RemoveNode(node)
        context.scene.RemoveNode(storage)
        raise SegmentationReadError(f"{path}: not a segmentation Slicer can read")
    node.SetAndObserveStorageNodeID(storage.GetID())
    node.CreateDefaultDisplayNodes()
    return node
