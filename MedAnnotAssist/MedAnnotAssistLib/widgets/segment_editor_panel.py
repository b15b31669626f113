"""The Segment Editor section: Slicer's own Segment Editor widget embedded in the panel, following the structure
selected in the Protocol section (or the structure a reviewer edits), and telling the protocol model when the
reader picks a segment in the editor; a button opens the full Segment Editor module on the same segment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import slicer

if TYPE_CHECKING:
    from ..workflow.events import Event
    from ..workflow.protocol import ProtocolModel
    from ..workflow.review import ReviewModel

EDITOR_NODE_TAG = "MedAnnotAssist"  # the embedded editor's own parameter node, apart from the module's


class SegmentEditorPanel:
    def __init__(self, ui, protocol: ProtocolModel, review: ReviewModel):
        self.ui = ui
        self.protocol = protocol
        self.review = review
        self.editor = ui.segmentEditorWidget
        self._shortcutsInstalled = False
        self._unsubscribe = [protocol.subscribe(self.onProtocolEvent), review.subscribe(self.onReviewEvent)]
        self.editor.currentSegmentIDChanged.connect(self.onSegmentChosen)
        ui.openSegmentEditorButton.clicked.connect(self.onOpenModule)

    def editorNode(self):
        """The embedded editor's parameter node (made again after the scene was closed)."""
        node = slicer.mrmlScene.GetSingletonNode(EDITOR_NODE_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.vtkMRMLSegmentEditorNode()
            node.SetSingletonTag(EDITOR_NODE_TAG)
            node = slicer.mrmlScene.AddNode(node)
        if self.editor.mrmlSegmentEditorNode() is not node:
            self.editor.setMRMLSegmentEditorNode(node)
        return node

    def show(self, segmentationNode, volumeNode, segmentId: str | None) -> None:
        """Edit ``segmentId`` of ``segmentationNode`` on ``volumeNode``, in the embedded editor."""
        self.editorNode()
        if self.editor.segmentationNode() is not segmentationNode:
            self.editor.setSegmentationNode(segmentationNode)
        if volumeNode is not None and self.editor.sourceVolumeNode() is not volumeNode:
            self.editor.setSourceVolumeNode(volumeNode)
        if segmentId:
            self.editor.setCurrentSegmentID(segmentId)

    def onProtocolEvent(self, event: Event) -> None:
        session = self.protocol.session
        if event.name == "selected" and session is not None:
            self.show(session.segmentationNode, session.volumeNode, event["segment_id"])

    def onReviewEvent(self, event: Event) -> None:
        review = self.review.review
        if event.name == "selected" and review is not None:
            node = slicer.mrmlScene.GetNodeByID(event["segmentation_node_id"])
            self.show(node, review.imageNode, event["segment_id"])

    def onSegmentChosen(self, segmentId: str) -> None:
        """The reader picked a segment in the editor: its structure's row is selected (its time counts)."""
        session = self.protocol.session
        if session is not None and self.editor.segmentationNode() is session.segmentationNode:
            self.protocol.select_segment(segmentId)

    def onOpenModule(self) -> None:
        segmentationNode, volumeNode = self.editor.segmentationNode(), self.editor.sourceVolumeNode()
        segmentId = self.editor.currentSegmentID()
        slicer.util.selectModule("SegmentEditor")
        moduleEditor = getattr(getattr(slicer.modules, "SegmentEditorWidget", None), "editor", None)
        if moduleEditor is not None and segmentationNode is not None:
            moduleEditor.setSegmentationNode(segmentationNode)
            if volumeNode is not None:
                moduleEditor.setSourceVolumeNode(volumeNode)
            if segmentId:
                moduleEditor.setCurrentSegmentID(segmentId)

    def enter(self) -> None:
        """The module panel is shown: the editor's keys (1-9 for effects, Escape ...) work in the views."""
        self.editorNode()
        if not self._shortcutsInstalled:
            self.editor.installKeyboardShortcuts()
            self._shortcutsInstalled = True

    def exit(self) -> None:
        """Another module is shown: its keys are its own, and no effect stays active behind it."""
        self.editor.setActiveEffect(None)
        if self._shortcutsInstalled:
            self.editor.uninstallKeyboardShortcuts()
            self._shortcutsInstalled = False

    def cleanup(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self.exit()
