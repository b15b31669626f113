"""Consensus review in a Slicer scene: N readers' segmentations in, the consensus segmentation, the
disagreement map (a volume, volume-rendered over the CT) and the metrics table (vtkMRMLTableNode) out.

The numbers come from ``core.consensus``; this module only moves masks between MRML nodes and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vtk

from ..core.consensus import ConsensusResult, compute_consensus
from ..core.labelio import Geometry, ReaderLabels, match_structure
from ..core.protocol import Protocol
from .protocol_segments import applyProtocol, structureSegments
from .scene import nodeIds, removeNodes
from .segmentation import importLabelmap, importLabelmapFile, loadSegmentation, segmentMasks
from .volumes import fileStem, loadVolume, volumeFromArray

_LPS = np.diag([-1.0, -1.0, 1.0])
TABLE_COLUMNS = [
    ("Structure", str),
    ("Reader A", str),
    ("Reader B", str),
    ("Dice", float),
    ("Jaccard", float),
    ("HD (mm)", float),
    ("HD95 (mm)", float),
    ("ASSD (mm)", float),
    ("Surface Dice", float),
    ("Tolerance (mm)", float),
    ("Verdict", str),
]


def geometryFromIjkToRas(ijkToRas: np.ndarray, shape: tuple[int, ...]) -> Geometry:
    """The ITK (LPS) description of a (k, j, i)-shaped grid given by Slicer's IJK-to-RAS matrix."""
    axes = np.asarray(ijkToRas, float)[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    direction = _LPS @ (axes / spacing)
    origin = _LPS @ np.asarray(ijkToRas, float)[:3, 3]
    size = tuple(int(s) for s in reversed(shape))
    return Geometry(size, tuple(float(s) for s in spacing), tuple(float(o) for o in origin), tuple(direction.ravel()))


def ijkToRasFromGeometry(geometry: Geometry) -> np.ndarray:
    return geometry.ijk_to_ras


def readerFromSegmentation(segmentationNode, protocol: Protocol, name: str | None = None) -> ReaderLabels:
    """A reader for ``core.consensus`` from a segmentation node: one layer per protocol structure."""
    bySegment = {
        segmentId: structureId for structureId, segmentId in structureSegments(segmentationNode, protocol).items()
    }
    segmentation = segmentationNode.GetSegmentation()
    for segmentId in _segmentIds(segmentationNode):
        if segmentId not in bySegment:
            structure = match_structure(protocol, segmentation.GetSegment(segmentId).GetName())
            if structure is not None and structure.id not in bySegment.values():
                bySegment[segmentId] = structure.id
    masks, ijkToRas = segmentMasks(segmentationNode, list(bySegment))
    layers, segments = [], {}
    for segmentId, structureId in bySegment.items():
        segments[structureId] = (len(layers), 1)
        layers.append(masks[segmentId].astype(np.uint8))
    unmatched = [segmentation.GetSegment(s).GetName() for s in _segmentIds(segmentationNode) if s not in bySegment]
    shape = layers[0].shape if layers else _referenceShape(segmentationNode)
    if not layers:
        layers = [np.zeros(shape, np.uint8)]
    return ReaderLabels(
        name or segmentationNode.GetName(), None, geometryFromIjkToRas(ijkToRas, shape), layers, segments, unmatched
    )


def _segmentIds(segmentationNode) -> list[str]:
    ids = vtk.vtkStringArray()
    segmentationNode.GetSegmentation().GetSegmentIDs(ids)
    return [ids.GetValue(i) for i in range(ids.GetNumberOfValues())]


def _referenceShape(segmentationNode) -> tuple[int, ...]:
    from .segmentation import referenceGeometry

    extent = referenceGeometry(segmentationNode).GetExtent()
    return (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)


class ReviewSession:
    """One case under review: readers' segmentation nodes, and after ``compute()`` the consensus
    segmentation node, the disagreement volume node and the metrics table node."""

    def __init__(self, context, protocol: Protocol, imageNode=None):
        self.context = context
        self.protocol = protocol
        self.imageNode = imageNode
        self.readerNodes: list = []
        self.readerNames: list[str] = []
        self.result: ConsensusResult | None = None
        self.consensusNode = None
        self.disagreementNode = None
        self.metricsTableNode = None
        self.editedNode = None
        self.finalNode = None
        self._before = nodeIds(context.scene)  # what ``close`` leaves

    def addReader(self, segmentationNode, name: str | None = None):
        self.readerNodes.append(segmentationNode)
        self.readerNames.append(name or segmentationNode.GetName())
        return segmentationNode

    def addReaderFile(self, path: str | Path, labelNames: dict[int, str] | None = None, name: str | None = None):
        """Load a reader's ``.seg.nrrd`` (or a labelmap with ``labelNames``) into the scene."""
        path = Path(path)
        name = name or fileStem(path)
        if path.name.endswith(".seg.nrrd"):
            node = loadSegmentation(self.context, path, name=name)
        else:
            if labelNames is None:
                raise ValueError(f"{path}: a labelmap needs a map of label values to structure names")
            node = importLabelmapFile(self.context, path, labelNames, name=name)
        applyProtocol(node, self.protocol)
        node.GetDisplayNode().SetVisibility(False)  # readers stay hidden until the reviewer picks one
        return self.addReader(node, name)

    def compute(self, **options) -> ConsensusResult:
        """Run the consensus (``core.consensus.compute_consensus`` options) and build the output nodes."""
        if not self.readerNodes:
            raise ValueError("no readers loaded")
        readers = [
            readerFromSegmentation(node, self.protocol, n)
            for node, n in zip(self.readerNodes, self.readerNames, strict=True)
        ]
        self.result = compute_consensus(readers, self.protocol, **options)
        ijkToRas = ijkToRasFromGeometry(readers[0].geometry)
        self._consensusSegmentation(ijkToRas)
        self._disagreementVolume(ijkToRas)
        self._metricsTable()
        return self.result

    def _consensusSegmentation(self, ijkToRas) -> None:
        if self.consensusNode is not None:
            self.context.scene.RemoveNode(self.consensusNode)
        labelmap = volumeFromArray(self.context, self.result.labels, ijkToRas, "consensus labels", labelmap=True)
        try:
            names = {value: item.structure.name for value, item in enumerate(self.result.structures, start=1)}
            self.consensusNode = importLabelmap(self.context, labelmap, names)
        finally:
            self.context.scene.RemoveNode(labelmap)
        self.consensusNode.SetName(f"Consensus ({self.result.fusion})")
        applyProtocol(self.consensusNode, self.protocol)
        if self.imageNode is not None:
            self.consensusNode.SetReferenceImageGeometryParameterFromVolumeNode(self.imageNode)

    def _disagreementVolume(self, ijkToRas) -> None:
        if self.disagreementNode is not None:
            self.context.scene.RemoveNode(self.disagreementNode)
        self.disagreementNode = volumeFromArray(self.context, self.result.disagreement, ijkToRas, "Disagreement")
        _disagreementDisplay(self.disagreementNode)

    def loadResult(
        self, consensusPath: str | Path, disagreementPath: str | Path | None = None, name: str = "Consensus"
    ):
        """The consensus the queue server computed (its ``.seg.nrrd``) and its disagreement map (``.nrrd``),
        instead of ``compute()``: what a reviewer adjudicates is exactly what the server stored. ``name``: the
        node's (a one-reader case's proposal is that reader's segmentation, with no map)."""
        if self.consensusNode is not None:
            removeNodes(self.context.scene, [self.consensusNode.GetID()])
        self.consensusNode = loadSegmentation(self.context, consensusPath, name=name)
        applyProtocol(self.consensusNode, self.protocol)
        if self.imageNode is not None:
            self.consensusNode.SetReferenceImageGeometryParameterFromVolumeNode(self.imageNode)
        if disagreementPath is not None:
            if self.disagreementNode is not None:
                removeNodes(self.context.scene, [self.disagreementNode.GetID()])
            self.disagreementNode = loadVolume(self.context, disagreementPath, name="Disagreement")
            self.disagreementNode.CreateDefaultDisplayNodes()
            _disagreementDisplay(self.disagreementNode)
        return self.consensusNode

    def loadFinal(self, path: str | Path):
        """The approved final segmentation (``.seg.nrrd``), shown instead of the consensus."""
        self.finalNode = loadSegmentation(self.context, path, name="Final")
        applyProtocol(self.finalNode, self.protocol)
        if self.imageNode is not None:
            self.finalNode.SetReferenceImageGeometryParameterFromVolumeNode(self.imageNode)
        if self.consensusNode is not None:
            self.consensusNode.GetDisplayNode().SetVisibility(False)
        return self.finalNode

    def setReaderVisible(self, name: str, visible: bool) -> None:
        """Show or hide one reader's segmentation in the views (readers start hidden)."""
        node = self.readerNodes[self.readerNames.index(name)]
        node.GetDisplayNode().SetVisibility(bool(visible))

    def editedCopy(self):
        """The reviewer's edited final: a copy of the consensus to edit with the Segment Editor (made once)."""
        if self.editedNode is None:
            if self.consensusNode is None:
                raise ValueError("load or compute the consensus first")
            self.editedNode = self.context.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Edited final")
            self.editedNode.GetSegmentation().DeepCopy(self.consensusNode.GetSegmentation())
            self.editedNode.CreateDefaultDisplayNodes()
            if self.imageNode is not None:
                self.editedNode.SetReferenceImageGeometryParameterFromVolumeNode(self.imageNode)
            self.consensusNode.GetDisplayNode().SetVisibility(False)
        return self.editedNode

    def onEdited(self, callback):
        """Call ``callback()`` after each change of the edited copy's content (a stroke, an undo); returns the
        function that stops it."""
        import slicer

        segmentation = self.editedCopy().GetSegmentation()
        tag = segmentation.AddObserver(slicer.vtkSegmentation.SourceRepresentationModified, lambda *_: callback())
        return lambda: segmentation.RemoveObserver(tag)

    def close(self) -> None:
        """Remove every node added since this review began (readers, consensus, edits, map, table)."""
        removeNodes(self.context.scene, sorted(nodeIds(self.context.scene) - self._before))
        self.readerNodes, self.readerNames = [], []
        self.consensusNode = self.disagreementNode = self.metricsTableNode = self.editedNode = self.finalNode = None

    def _metricsTable(self) -> None:
        if self.metricsTableNode is None:
            self.metricsTableNode = self.context.scene.AddNewNodeByClass("vtkMRMLTableNode", "Consensus metrics")
        table = self.metricsTableNode.GetTable()
        table.Initialize()
        columns = []
        for title, kind in TABLE_COLUMNS:
            column = vtk.vtkStringArray() if kind is str else vtk.vtkDoubleArray()
            column.SetName(title)
            table.AddColumn(column)
            columns.append(column)
        for item in self.result.structures:
            for pair in item.pairwise or [None]:
                values = [item.structure.name, pair.a if pair else "", pair.b if pair else ""]
                for key in ("dice", "jaccard", "hd_mm", "hd95_mm", "assd_mm", "surface_dice", "tolerance_mm"):
                    values.append(float(getattr(pair, key)) if pair else float("nan"))
                values.append(item.verdict)
                for column, value in zip(columns, values, strict=True):
                    column.InsertNextValue(value)
        self.metricsTableNode.Modified()

    def showDisagreementIn3D(self, showImage: bool = False):
        """Volume-render the disagreement map (yellow to red) and optionally the CT with a light preset."""
        from .rendering import setupVolumeRendering

        if self.disagreementNode is None:
            raise ValueError("compute() the consensus first")
        if showImage and self.imageNode is not None:
            setupVolumeRendering(self.context, self.imageNode, preset="CT-Soft-Tissue")
        return setupVolumeRendering(self.context, self.disagreementNode)

    def renderPng(self, path: str | Path, size=(600, 600), withConsensus: bool = False) -> Path:
        from .rendering import renderThreeDViewToPng

        nodes = [self.disagreementNode] + ([self.consensusNode] if withConsensus else [])
        if self.imageNode is not None and self.imageNode.GetDisplayNode() is not None:
            nodes.append(self.imageNode)
        return renderThreeDViewToPng(self.context, path, size=size, nodes=nodes)


def _disagreementDisplay(node) -> None:
    """On a warm colour scale up to a half-and-half split (the ramp's red, as in 3D); where all readers agree
    the map is transparent, so over the CT in a slice view it colours only the voxels where they differ."""
    from .rendering import DISAGREEMENT_SPLIT

    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, DISAGREEMENT_SPLIT)
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeWarm1")
    display.AutoThresholdOff()
    display.SetThreshold(1e-3, 1.0)  # a voxel where one of 1,000 readers differs still shows
    display.ApplyThresholdOn()
    display.InterpolateOff()  # voxel by voxel: blending a split with its agreeing neighbours would blur it yellow


def showInSliceViews(scene, volumeNode, opacity: float = 0.5, background=None) -> int:
    """Lay ``volumeNode`` over the slice views (their foreground, at ``opacity``; ``background`` under it);
    None clears the foreground. The number of views set: Slicer's layout makes the composite nodes."""
    found = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    count = found.GetNumberOfItems()
    for index in range(count):
        composite = found.GetItemAsObject(index)
        if background is not None:
            composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(volumeNode.GetID() if volumeNode is not None else None)
        composite.SetForegroundOpacity(float(opacity))
    return count
