"""Volume rendering through Slicer's Volume Rendering logic, and offscreen 3D and slice views written to PNG.

``renderThreeDViewToPng`` drives a never-shown ``vtkRenderWindow`` with Slicer's own 3D displayable
managers (volume rendering, segmentation surfaces, models, camera), as trame-slicer does, so the
picture is the one a Slicer 3D view would show; ``renderSliceViewToPng`` does the same for a slice view
(Slicer's slice logic blends the volume layers, its 2D displayable manager draws the segmentations).
Neither needs Qt or a display: on Linux without ``DISPLAY`` the window is an EGL one, which Mesa's
software rasterizer (llvmpipe) serves; the Debian packages are ``libegl1 libegl-mesa0 libgl1-mesa-dri``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import slicer
import vtk

# (value, (red, green, blue), opacity) for a disagreement map (the fraction of readers that differ from the
# consensus at a voxel): transparent where all agree, yellow where one of several differs, opaque red at
# DISAGREEMENT_SPLIT, where the readers split half and half: the most a consensus allows (a majority never
# differs from it), and all a pair of readers ever shows.
DISAGREEMENT_SPLIT = 0.5
DISAGREEMENT_RAMP = (
    (0.0, (1.0, 1.0, 0.0), 0.0),
    (0.025, (1.0, 1.0, 0.0), 0.0),
    (0.125, (1.0, 0.9, 0.0), 0.05),
    (0.3, (1.0, 0.45, 0.0), 0.2),
    (DISAGREEMENT_SPLIT, (0.9, 0.0, 0.0), 0.6),
)
THREE_D_DISPLAYABLE_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLVolumeRenderingDisplayableManager",
    "vtkMRMLSegmentationsDisplayableManager3D",
)
SLICE_DISPLAYABLE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D",)
OFFSCREEN_VIEW_NAME = "MedAnnotAssistOffscreen"


def volumeRenderingLogic(context):
    logic = context.volumeRenderingLogic
    if logic is None:
        raise RuntimeError("the Volume Rendering module logic is not registered with this scene's application")
    return logic


def presetNames(context) -> list[str]:
    """Slicer's named volume rendering presets ("CT-Bone", "MR-Default", ...)."""
    nodes = volumeRenderingLogic(context).GetPresetsScene().GetNodesByClass("vtkMRMLVolumePropertyNode")
    return [nodes.GetItemAsObject(i).GetName() for i in range(nodes.GetNumberOfItems())]


def setupVolumeRendering(context, volumeNode, preset: str | Sequence = DISAGREEMENT_RAMP, visible: bool = True):
    """Volume-render ``volumeNode`` with a Slicer preset name or a ``(value, rgb, opacity)`` ramp.

    Reuses the volume's rendering display node if it has one, as Slicer's module does; the
    default ramp suits a disagreement map in [0, 1]. A CT shown as context takes a CT preset.
    """
    logic = volumeRenderingLogic(context)
    displayNode = logic.GetFirstVolumeRenderingDisplayNode(volumeNode)
    if displayNode is None:
        displayNode = logic.CreateDefaultVolumeRenderingNodes(volumeNode)
    propertyNode = displayNode.GetVolumePropertyNode()
    if isinstance(preset, str):
        presetNode = logic.GetPresetByName(preset)
        if presetNode is None:
            raise ValueError(f"unknown volume rendering preset {preset!r}; Slicer's are {presetNames(context)}")
        propertyNode.Copy(presetNode)
    else:
        applyRamp(propertyNode, preset, unitDistance=min(volumeNode.GetSpacing()))
    displayNode.SetVisibility(bool(visible))
    return displayNode


def applyRamp(propertyNode, ramp: Sequence, unitDistance: float = 1.0) -> None:
    """Colour and opacity transfer functions from ``(value, (r, g, b), opacity)`` points.

    Opacity is per ``unitDistance`` mm of ray (the voxel size keeps it per voxel); no shading and
    no gradient opacity, so colours stay those of the ramp.
    """
    if len(ramp) < 2:
        raise ValueError("a ramp needs at least two (value, rgb, opacity) points")
    prop = propertyNode.GetVolumeProperty()
    colors = vtk.vtkColorTransferFunction()
    opacities = vtk.vtkPiecewiseFunction()
    for value, (red, green, blue), opacity in ramp:
        colors.AddRGBPoint(value, red, green, blue)
        opacities.AddPoint(value, opacity)
    gradient = vtk.vtkPiecewiseFunction()
    gradient.AddPoint(0.0, 1.0)
    gradient.AddPoint(1.0, 1.0)
    wasModifying = propertyNode.StartModify()
    propertyNode.SetColor(colors)
    propertyNode.SetScalarOpacity(opacities)
    propertyNode.SetGradientOpacity(gradient)
    prop.SetShade(False)
    prop.SetInterpolationTypeToLinear()
    prop.SetScalarOpacityUnitDistance(unitDistance)
    propertyNode.EndModify(wasModifying)


def renderThreeDViewToPng(
    context,
    path: str | Path,
    size: tuple[int, int] = (600, 600),
    nodes: Iterable | None = None,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    azimuth: float = 0.0,
    elevation: float = 0.0,
) -> Path:
    """Render the scene's 3D content (or only ``nodes``) from the front, fitted, into a PNG; ``azimuth`` and
    ``elevation`` (degrees) turn the camera about the content's centre, as dragging in a 3D view does.

    Segmentations shown get their closed-surface representation (as Slicer's "Show 3D" does).
    A temporary view node and its camera live in the scene only during the call; display nodes
    hidden because they are not in ``nodes`` get their 3D visibility back afterwards.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shown = None if nodes is None else {node.GetID() for node in nodes}
    window, renderer, interactor = _offscreenWindow(size)
    hidden = _hideOthers(context.scene, shown)
    viewNode = cameraNode = None
    try:
        for node in _nodes(context.scene, "vtkMRMLSegmentationNode"):
            display = node.GetDisplayNode()
            if (shown is None or node.GetID() in shown) and display and display.GetVisibility3D():
                node.CreateClosedSurfaceRepresentation()
        group = _displayableManagers(
            context, renderer, slicer.vtkMRMLThreeDViewDisplayableManagerFactory, THREE_D_DISPLAYABLE_MANAGERS
        )
        viewNode = context.scene.AddNewNodeByClass("vtkMRMLViewNode", OFFSCREEN_VIEW_NAME)
        viewNode.SetLayoutName(OFFSCREEN_VIEW_NAME)
        viewNode.SetBackgroundColor(*background)
        viewNode.SetBackgroundColor2(*background)
        viewNode.SetBoxVisible(False)
        viewNode.SetAxisLabelsVisible(False)
        group.SetMRMLDisplayableNode(viewNode)
        cameraNode = group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()
        renderer.ResetCamera()  # the managers have added their actors and volumes
        if azimuth or elevation:
            camera = cameraNode.GetCamera()
            camera.Azimuth(float(azimuth))
            camera.Elevation(float(elevation))
            camera.OrthogonalizeViewUp()
            renderer.ResetCamera()
        renderer.ResetCameraClippingRange()
        window.Render()
        _writePng(window, path)
        group.SetMRMLDisplayableNode(None)
    finally:
        interactor.SetRenderWindow(None)
        window.Finalize()
        for node in (viewNode, cameraNode):
            if node is not None and node.GetScene() is not None:
                context.scene.RemoveNode(node)
        for display in hidden:
            display.SetVisibility3D(True)
    if not path.is_file():
        raise OSError(f"{path}: the 3D view could not be written")
    return path


def renderSliceViewToPng(
    context,
    path: str | Path,
    background,
    foreground=None,
    foregroundOpacity: float = 0.5,
    orientation: str = "Axial",
    offset: float | None = None,
    size: tuple[int, int] = (600, 600),
) -> Path:
    """Render one slice view as Slicer draws it into a PNG: ``background`` and ``foreground`` (volume nodes)
    blended by Slicer's slice logic with their display nodes' window, level and colours, and the visible
    segmentations' fill and outline drawn by Slicer's 2D segmentations displayable manager.

    The view is fitted to the background; ``offset``: the slice's position in mm along its normal (Slicer's
    slice offset; the middle of the background when None). A temporary slice node and its composite node
    live in the scene only during the call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene, appLogic = context.scene, context.applicationLogic
    if appLogic.GetSliceLogics() is None:
        appLogic.SetSliceLogics(vtk.vtkCollection())
    before = {node.GetID() for node in _nodes(scene, "vtkMRMLNode")}
    window, renderer, interactor = _offscreenWindow(size)
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(appLogic)
    appLogic.GetSliceLogics().AddItem(logic)
    try:
        renderer.GetActiveCamera().ParallelProjectionOn()
        group = _displayableManagers(
            context, renderer, slicer.vtkMRMLSliceViewDisplayableManagerFactory, SLICE_DISPLAYABLE_MANAGERS
        )
        logic.SetMRMLScene(scene)
        sliceNode = logic.AddSliceNode(OFFSCREEN_VIEW_NAME)
        sliceNode.SetOrientation(orientation)
        group.SetMRMLDisplayableNode(sliceNode)
        composite = logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(background.GetID())
        composite.SetForegroundVolumeID(foreground.GetID() if foreground is not None else None)
        composite.SetForegroundOpacity(float(foregroundOpacity))
        logic.ResizeSliceNode(int(size[0]), int(size[1]))
        logic.FitSliceToBackground()
        if offset is not None:
            logic.SetSliceOffset(float(offset))
        logic.SnapSliceOffsetToIJK()
        mapper = vtk.vtkImageMapper()  # the slice logic's output is RGBA in 0-255 (what CTK's light box shows)
        mapper.SetColorWindow(255)
        mapper.SetColorLevel(127.5)
        mapper.SetInputConnection(logic.GetImageDataConnection())
        actor = vtk.vtkActor2D()
        actor.SetMapper(mapper)
        actor.GetProperty().SetDisplayLocationToBackground()
        renderer.AddViewProp(actor)
        window.Render()
        _writePng(window, path)
        group.SetMRMLDisplayableNode(None)
    finally:
        appLogic.GetSliceLogics().RemoveItem(logic)
        logic.SetMRMLScene(None)
        interactor.SetRenderWindow(None)
        window.Finalize()
        added = [node.GetID() for node in _nodes(scene, "vtkMRMLNode") if node.GetID() not in before]
        for nodeId in added:
            node = scene.GetNodeByID(nodeId)
            if node is not None:
                scene.RemoveNode(node)
    if not path.is_file():
        raise OSError(f"{path}: the slice view could not be written")
    return path


def _writePng(window, path: Path) -> None:
    grabber = vtk.vtkWindowToImageFilter()
    grabber.SetInput(window)
    grabber.ReadFrontBufferOff()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grabber.GetOutputPort())
    writer.Write()


def _nodes(scene, className: str) -> list:
    found = scene.GetNodesByClass(className)
    return [found.GetItemAsObject(i) for i in range(found.GetNumberOfItems())]


def _hideOthers(scene, shown: set[str] | None) -> list:
    """Turn off the 3D visibility of display nodes of displayable nodes not in ``shown``."""
    if shown is None:
        return []
    hidden = []
    for node in _nodes(scene, "vtkMRMLDisplayableNode"):
        if node.GetID() in shown:
            continue
        for i in range(node.GetNumberOfDisplayNodes()):
            display = node.GetNthDisplayNode(i)
            if display is not None and display.GetVisibility3D():
                display.SetVisibility3D(False)
                hidden.append(display)
    return hidden


def _offscreenWindow(size: tuple[int, int]):
    """A hidden render window, its renderer and an interactor (displayable managers need one)."""
    window = None
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and hasattr(vtk, "vtkEGLRenderWindow"):
        window = vtk.vtkEGLRenderWindow()  # skips VTK's X attempt and its warning; falls back below
        window.SetOffScreenRendering(True)
        if not window.SupportsOpenGL():
            window = None
    if window is None:
        window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(True)
    window.SetShowWindow(False)
    window.SetMultiSamples(0)
    window.SetSize(int(size[0]), int(size[1]))
    renderer = vtk.vtkRenderer()
    window.AddRenderer(renderer)
    interactor = vtk.vtkGenericRenderWindowInteractor()  # the window does not keep it alive
    interactor.SetRenderWindow(window)
    interactor.Initialize()
    return window, renderer, interactor


def _displayableManagers(context, renderer, factoryClass, names):
    """Slicer's displayable managers ``names`` on ``renderer``, from the application's view factory."""
    factory = factoryClass.GetInstance()
    factory.SetMRMLApplicationLogic(context.applicationLogic)  # a singleton: the last headless scene's otherwise
    for name in names:
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = slicer.vtkMRMLDisplayableManagerGroup()
    group.Initialize(factory, renderer)
    return group
