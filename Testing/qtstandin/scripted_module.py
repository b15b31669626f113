"""Stand-in for ``slicer.ScriptedLoadableModule``: the base classes of a scripted module, reduced to what
Slicer does when it loads a module and shows its panel.

- ``ScriptedLoadableModule(parent)``: fills ``parent`` (a ``ModuleStandIn``: title, categories, help ...).
- ``ScriptedLoadableModuleWidget(parent)``: ``self.parent`` is the module panel (a ``ModulePanel``) and
  ``self.layout`` its layout; ``setup()`` is called by the harness, as Slicer does before showing the panel.
  The developer section (Reload & Test) is not built.
- ``ScriptedLoadableModuleLogic``: the module's singleton parameter node in ``slicer.mrmlScene``.
- ``ScriptedLoadableModuleTest``: ``unittest.TestCase`` with ``delayDisplay`` logging its message.
"""

from __future__ import annotations

import logging
import os
import sys
import unittest

import qt
import slicer
from PySide6.QtCore import Property

from .qmrml import qMRMLWidget

__all__ = [
    "ScriptedLoadableModule",
    "ScriptedLoadableModuleWidget",
    "ScriptedLoadableModuleLogic",
    "ScriptedLoadableModuleTest",
]


class ModuleStandIn:
    """Stand-in for qSlicerScriptedLoadableModule, the ``parent`` a module class fills in."""

    def __init__(self, path: str):
        self.path = path
        self.title = ""
        self.categories: list[str] = []
        self.dependencies: list[str] = []
        self.contributors: list[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.hidden = False
        self.icon = None


class ModulePanel(qMRMLWidget):
    """Stand-in for qSlicerScriptedLoadableModuleWidget: the panel the module widget builds into."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setLayout(qt.QVBoxLayout())
        self._entered = False

    def _isEntered(self) -> bool:
        return self._entered

    isEntered = Property(bool, _isEntered)


class ScriptedLoadableModule:
    def __init__(self, parent):
        super().__init__()
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        moduleDir = os.path.dirname(self.parent.path)
        for iconExtension in (".svg", ".png"):
            iconPath = os.path.join(moduleDir, "Resources/Icons", self.moduleName + iconExtension)
            if os.path.isfile(iconPath):
                parent.icon = qt.QIcon(iconPath)
                break

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.developerMode = False
        if not parent:
            self.parent = ModulePanel()
            self.parent.setMRMLScene(slicer.mrmlScene)
        else:
            self.parent = parent
        self.layout = self.parent.layout()
        if not parent:
            self.setup()
            self.parent.show()

    def resourcePath(self, filename):
        modulePath = sys.modules[type(self).__module__].__file__
        return os.path.join(os.path.dirname(modulePath), "Resources", filename)

    def cleanup(self):
        pass

    def setup(self):
        pass  # Slicer adds the developer section (Reload & Test) here


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        if self.isSingletonParameterNode:
            parameterNode = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if parameterNode:
                if parameterNode.GetAttribute("ModuleName") != self.moduleName:
                    parameterNode.SetAttribute("ModuleName", self.moduleName)
                return parameterNode
        else:
            for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                parameterNode = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScriptedModuleNode")
                if parameterNode.GetAttribute("ModuleName") == self.moduleName:
                    return parameterNode
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        logging.info(message)
