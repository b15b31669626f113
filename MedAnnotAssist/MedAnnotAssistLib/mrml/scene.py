"""The MRML scene and the Slicer module logics our code works with, with or without the Slicer app.

Inside Slicer the widget builds a context from the running application
(``SceneContext.fromApplication(slicer.mrmlScene, slicer.app.applicationLogic())``); tests, the
CLI, the server and the browser annotator build one on PyPI ``slicer-core`` with ``headless()``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import slicer  # the slicer-core package outside Slicer, Slicer's own module inside it
import vtk


class SlicerResourcesMissingError(RuntimeError):
    """Slicer's terminology files could not be found for a headless scene."""


def slicer_share_directory() -> Path:
    """Folder holding Slicer's ``terminologies/*.term.json`` for a headless scene.

    PyPI slicer-core ships no share directory; trame-slicer ships Slicer's terminology files.
    The package is located without importing it (importing it needs its view layer).
    """
    spec = importlib.util.find_spec("trame_slicer")
    if spec is None or not spec.submodule_search_locations:
        raise SlicerResourcesMissingError(
            "Slicer terminology files not found: install trame-slicer (pip install 'medannotassist[mrml]')"
        )
    share = Path(next(iter(spec.submodule_search_locations))) / "resources"
    if not any((share / "terminologies").glob("*.term.json")):
        raise SlicerResourcesMissingError(f"no *.term.json files in {share / 'terminologies'}")
    return share


@dataclass
class SceneContext:
    """A scene plus the module logics registered with its application logic."""

    scene: object
    applicationLogic: object
    segmentationsLogic: object
    terminologiesLogic: object
    volumesLogic: object
    colorLogic: object
    subjectHierarchyLogic: object | None = None
    volumeRenderingLogic: object | None = None

    @classmethod
    def headless(cls, shareDirectory: str | Path | None = None) -> SceneContext:
        """A fresh scene with Colors, Volumes, Terminologies, Segmentations, SubjectHierarchy, VolumeRendering logic."""
        share = Path(shareDirectory) if shareDirectory else slicer_share_directory()
        scene = slicer.vtkMRMLScene()
        appLogic = slicer.vtkSlicerApplicationLogic()
        appLogic.SetMRMLScene(scene)
        appLogic.GetColorLogic().SetMRMLScene(scene)
        appLogic.GetColorLogic().AddDefaultColorNodes()

        def register(logic, name: str, shareSubfolder: str = ""):
            # The share directory must be set before the scene so that logics find their files.
            if hasattr(logic, "SetModuleShareDirectory"):
                logic.SetModuleShareDirectory(str(share / shareSubfolder if shareSubfolder else share))
            logic.SetMRMLScene(scene)
            logic.SetMRMLApplicationLogic(appLogic)
            appLogic.SetModuleLogic(name, logic)
            return logic

        colors = register(slicer.vtkMRMLColorLogic(), "Colors")
        volumes = register(slicer.vtkSlicerVolumesLogic(), "Volumes")
        terminologies = register(slicer.vtkSlicerTerminologiesModuleLogic(), "Terminologies", "terminologies")
        segmentations = register(slicer.vtkSlicerSegmentationsModuleLogic(), "Segmentations")
        subjectHierarchy = register(slicer.vtkSlicerSubjectHierarchyModuleLogic(), "SubjectHierarchy")
        # The application logic holds module logics by weak pointer: the context keeps this one alive.
        volumeRendering = register(slicer.vtkSlicerVolumeRenderingLogic(), "VolumeRendering")  # presets.xml in share
        return cls(scene, appLogic, segmentations, terminologies, volumes, colors, subjectHierarchy, volumeRendering)

    @classmethod
    def fromApplication(cls, scene, applicationLogic) -> SceneContext:
        """The running Slicer's scene and logics, looked up by module name in the application logic."""

        def logic(name: str):
            found = applicationLogic.GetModuleLogic(name)
            if found is None:
                raise RuntimeError(f"Slicer module logic '{name}' is not registered")
            return found

        return cls(
            scene,
            applicationLogic,
            logic("Segmentations"),
            logic("Terminologies"),
            logic("Volumes"),
            logic("Colors"),
            applicationLogic.GetModuleLogic("SubjectHierarchy"),
            applicationLogic.GetModuleLogic("VolumeRendering"),
        )

    def loadedTerminologyNames(self) -> list[str]:
        names = vtk.vtkStringArray()
        self.terminologiesLogic.GetLoadedTerminologyNames(names)
        return [names.GetValue(i) for i in range(names.GetNumberOfValues())]


def nodeIds(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def removeNodes(scene, ids) -> None:
    """Remove the nodes of ``ids`` still in the scene, with their display and storage nodes."""
    for nodeId in ids:
        node = scene.GetNodeByID(nodeId)
        if node is None:
            continue
        dependents = []
        if node.IsA("vtkMRMLDisplayableNode"):
            dependents += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            dependents += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        if node.IsA("vtkMRMLSegmentationNode"):
            # freed segments are erased from their shared layer one full pass each: release the layers first
            segmentation = node.GetSegmentation()
            for layer in range(segmentation.GetNumberOfLayers()):
                segmentation.GetLayerDataObject(layer).Initialize()
        scene.RemoveNode(node)
        for dependent in dependents:
            if dependent is not None and scene.IsNodePresent(dependent):
                scene.RemoveNode(dependent)
