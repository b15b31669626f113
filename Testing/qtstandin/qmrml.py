"""Stand-ins for Slicer's qMRML widgets (``slicer.qMRMLNodeComboBox`` ...), over a real slicer-core scene.

Placeholders, not Slicer's widgets: each offers the properties, signals and slots of the real class that our
.ui files and widgets use, with the same names and meanings (Slicer's qMRMLWidgets headers), and works on
the real MRML scene (nodes listed, selected and observed for real). Views, the Segment Editor's effects
and the subject hierarchy are not reproduced: the Segment Editor is a labelled box remembering what it was
told to edit. A .ui file using a qMRML class missing here fails to load with a message naming it.
"""

from __future__ import annotations

import shiboken6
from PySide6 import QtCore, QtWidgets
from PySide6.QtCore import Property, Signal


class qMRMLWidget(QtWidgets.QWidget):
    """Stand-in for qMRMLWidget: a widget holding a scene; ``setMRMLScene`` emits ``mrmlSceneChanged``."""

    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        if scene is self._scene:
            return
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)


def _listProperty(name: str):
    def getter(self):
        return list(getattr(self, name))

    def setter(self, values):
        setattr(self, name, [str(v) for v in values])
        self._refresh()

    return Property("QStringList", getter, setter)


def _flagProperty(name: str, refresh: bool = True):
    def getter(self):
        return getattr(self, name)

    def setter(self, value):
        setattr(self, name, bool(value))
        if refresh:
            self._refresh()

    return Property(bool, getter, setter)


class qMRMLNodeComboBox(QtWidgets.QWidget):
    """Stand-in for qMRMLNodeComboBox: the scene's nodes of ``nodeTypes`` in a combo box, kept up to date.

    Signals ``currentNodeChanged(vtkMRMLNode*)`` and ``currentNodeIDChanged(QString)`` fire on any change of the
    current node, by the user or by code, as in Slicer; ``nodeActivated`` when the user picks one.
    """

    currentNodeChanged = Signal(object)
    currentNodeIDChanged = Signal(str)
    nodeActivated = Signal(object)
    nodeAdded = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._combo = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._combo)
        self._scene = None
        self._tags: list[int] = []
        self._nodeTypes: list[str] = []
        self._hideChildNodeTypes: list[str] = []
        self._noneEnabled = False
        self._showHidden = False
        self._showChildNodeTypes = True
        self._addEnabled = self._removeEnabled = self._editEnabled = self._renameEnabled = False
        self._noneDisplay = "None"
        self._currentId: str | None = None
        self._combo.currentIndexChanged.connect(self._onIndexChanged)
        self._combo.activated.connect(lambda index: self.nodeActivated.emit(self.nodeFromIndex(index)))

    nodeTypes = _listProperty("_nodeTypes")
    hideChildNodeTypes = _listProperty("_hideChildNodeTypes")
    noneEnabled = _flagProperty("_noneEnabled")
    showHidden = _flagProperty("_showHidden")
    showChildNodeTypes = _flagProperty("_showChildNodeTypes")
    addEnabled = _flagProperty("_addEnabled", refresh=False)
    removeEnabled = _flagProperty("_removeEnabled", refresh=False)
    editEnabled = _flagProperty("_editEnabled", refresh=False)
    renameEnabled = _flagProperty("_renameEnabled", refresh=False)

    def _getNoneDisplay(self) -> str:
        return self._noneDisplay

    def _setNoneDisplay(self, text: str) -> None:
        self._noneDisplay = text
        self._refresh()

    noneDisplay = Property(str, _getNoneDisplay, _setNoneDisplay)

    # -- the scene ---------------------------------------------------------------------------------------
    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene) -> None:
        if self._scene is not None:
            for tag in self._tags:
                self._scene.RemoveObserver(tag)
        self._scene, self._tags = scene, []
        if scene is not None:
            for event in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent):
                self._tags.append(scene.AddObserver(event, self._onSceneChanged))
        self._refresh()

    def _onSceneChanged(self, caller, event) -> None:
        if shiboken6.isValid(self):  # a combo box deleted by Qt still observed: nothing to update
            self._refresh()

    def _listed(self) -> list:
        if self._scene is None:
            return []
        nodes = []
        for nodeType in self._nodeTypes:
            collection = self._scene.GetNodesByClass(nodeType)
            for i in range(collection.GetNumberOfItems()):
                node = collection.GetItemAsObject(i)
                if not self._showChildNodeTypes and node.GetClassName() != nodeType:
                    continue
                if any(node.IsA(hidden) for hidden in self._hideChildNodeTypes):
                    continue
                if node.GetHideFromEditors() and not self._showHidden:
                    continue
                if node not in nodes:
                    nodes.append(node)
        return nodes

    def _refresh(self) -> None:
        keep = self._currentId
        blocked = self._combo.blockSignals(True)
        self._combo.clear()
        if self._noneEnabled:
            self._combo.addItem(self._noneDisplay, "")
        for node in self._listed():
            self._combo.addItem(node.GetName(), node.GetID())
        index = self._combo.findData(keep) if keep else -1
        if index < 0:
            index = 0 if self._combo.count() and (self._noneEnabled or keep is None) else -1
        self._combo.setCurrentIndex(index)
        self._combo.blockSignals(blocked)
        self._onIndexChanged(self._combo.currentIndex())

    def _onIndexChanged(self, index: int) -> None:
        nodeId = self._combo.itemData(index) if index >= 0 else None
        nodeId = nodeId or None
        if nodeId == self._currentId:
            return
        self._currentId = nodeId
        self.currentNodeChanged.emit(self.currentNode())
        self.currentNodeIDChanged.emit(nodeId or "")

    # -- the current node --------------------------------------------------------------------------------
    def currentNode(self):
        if self._scene is None or not self._currentId:
            return None
        return self._scene.GetNodeByID(self._currentId)

    def _currentNodeID(self) -> str:
        return self._currentId or ""

    def setCurrentNodeID(self, nodeId: str) -> None:
        index = self._combo.findData(nodeId) if nodeId else (0 if self._noneEnabled else -1)
        if nodeId and index < 0:
            raise ValueError(f"qMRMLNodeComboBox stand-in {self.objectName()}: node {nodeId} is not listed")
        self._combo.setCurrentIndex(index)

    currentNodeID = Property(str, _currentNodeID, setCurrentNodeID)

    def setCurrentNode(self, node) -> None:
        self.setCurrentNodeID(node.GetID() if node is not None else "")

    def nodeCount(self) -> int:
        return len(self._listed())

    def nodeFromIndex(self, index: int):
        nodeId = self._combo.itemData(index)
        return self._scene.GetNodeByID(nodeId) if nodeId and self._scene is not None else None


class qMRMLSegmentEditorWidget(qMRMLWidget):
    """Stand-in for qMRMLSegmentEditorWidget: a labelled box that remembers the segmentation, source volume,
    segment and effect it was given (no effects run here)."""

    currentSegmentIDChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        label = QtWidgets.QLabel("Segment Editor (Slicer's, not shown in tests)", self)
        label.setAlignment(QtCore.Qt.AlignCenter)
        label.setFrameShape(QtWidgets.QFrame.StyledPanel)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(label)
        self._segmentation = self._source = self._editorNode = None
        self._segmentId = ""
        self.standInActiveEffectName = ""  # what setActiveEffectByName was told (tests read it)
        self.standInShortcutsInstalled = False  # between installKeyboardShortcuts and uninstallKeyboardShortcuts

    def setMRMLSegmentEditorNode(self, node) -> None:
        self._editorNode = node

    def mrmlSegmentEditorNode(self):
        return self._editorNode

    def setSegmentationNode(self, node) -> None:
        self._segmentation = node

    def segmentationNode(self):
        return self._segmentation

    def segmentationNodeID(self) -> str:
        return self._segmentation.GetID() if self._segmentation is not None else ""

    def setSourceVolumeNode(self, node) -> None:
        self._source = node

    def sourceVolumeNode(self):
        return self._source

    def sourceVolumeNodeID(self) -> str:
        return self._source.GetID() if self._source is not None else ""

    def setCurrentSegmentID(self, segmentId: str) -> None:
        if segmentId != self._segmentId:
            self._segmentId = segmentId
            self.currentSegmentIDChanged.emit(segmentId)

    def currentSegmentID(self) -> str:
        return self._segmentId

    def setActiveEffectByName(self, name: str) -> None:
        self.standInActiveEffectName = name

    def setActiveEffect(self, effect) -> None:
        """Only None (no effect) is meaningful here: the stand-in has no effects."""
        self.standInActiveEffectName = "" if effect is None else str(effect)

    def installKeyboardShortcuts(self, parent=None) -> None:
        self.standInShortcutsInstalled = True

    def uninstallKeyboardShortcuts(self) -> None:
        self.standInShortcutsInstalled = False


PLACEHOLDERS = (qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentEditorWidget)
