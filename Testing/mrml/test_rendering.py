"""Offscreen volume rendering on slicer-core: Slicer's displayable managers draw into a PNG."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from vtk.util import numpy_support

from MedAnnotAssistLib.mrml import rendering
from MedAnnotAssistLib.mrml.segmentation import importLabelmap
from MedAnnotAssistLib.mrml.volumes import volumeFromArray

SIZE = 64
IJK_TO_RAS = np.diag([1.5, 1.5, 1.5, 1.0])


def _sphere() -> np.ndarray:
    """Disagreement 1 at the centre of a 64^3 grid, falling to 0 at radius 26 voxels."""
    k, j, i = np.mgrid[:SIZE, :SIZE, :SIZE]
    radius = np.sqrt((i - SIZE / 2) ** 2 + (j - SIZE / 2) ** 2 + (k - SIZE / 2) ** 2)
    return np.clip(1.0 - radius / 26.0, 0.0, 1.0).astype(np.float32)


def _pixels(path) -> np.ndarray:
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    width, height, _ = image.GetDimensions()
    scalars = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return scalars.reshape(height, width, -1)[..., :3].astype(int)


def _foreground(pixels: np.ndarray) -> np.ndarray:
    """Pixels that differ from the black background."""
    return pixels.max(axis=-1) > 10


def _warm(pixels: np.ndarray) -> np.ndarray:
    """Yellow to red, faint or bright: red dominates blue."""
    red, blue = pixels[..., 0], pixels[..., 2]
    return (red > 10) & (blue < red / 2)


def test_disagreement_map_renders_yellow_to_red(context, tmp_path):
    volume = volumeFromArray(context, _sphere(), IJK_TO_RAS, "Disagreement")
    display = rendering.setupVolumeRendering(context, volume)
    assert display.IsA("vtkMRMLVolumeRenderingDisplayNode") and display.GetVisibility()

    path = rendering.renderThreeDViewToPng(context, tmp_path / "disagreement.png", size=(300, 240))

    pixels = _pixels(path)
    assert pixels.shape == (240, 300, 3)
    assert _foreground(pixels).mean() > 0.02
    assert _warm(pixels).sum() > 0.95 * _foreground(pixels).sum()
    assert (pixels[..., 0] > 200).sum() > 0.25 * _foreground(pixels).sum()  # not only a faint haze
    # the offscreen view and its camera do not stay in the scene
    assert context.scene.GetNumberOfNodesByClass("vtkMRMLViewNode") == 0
    assert context.scene.GetNumberOfNodesByClass("vtkMRMLCameraNode") == 0


def test_full_agreement_renders_blank(context, tmp_path):
    """The check above can fail: zeros are fully transparent."""
    volume = volumeFromArray(context, np.zeros((SIZE, SIZE, SIZE), np.float32), IJK_TO_RAS, "Agreement")
    rendering.setupVolumeRendering(context, volume)

    pixels = _pixels(rendering.renderThreeDViewToPng(context, tmp_path / "blank.png", size=(200, 200)))

    assert not _foreground(pixels).any()


def test_nodes_limit_the_view_and_hidden_nodes_come_back(context, tmp_path):
    sphere = volumeFromArray(context, _sphere(), IJK_TO_RAS, "Disagreement")
    empty = volumeFromArray(context, np.zeros((SIZE, SIZE, SIZE), np.float32), IJK_TO_RAS, "Agreement")
    sphereDisplay = rendering.setupVolumeRendering(context, sphere)
    rendering.setupVolumeRendering(context, empty)

    path = rendering.renderThreeDViewToPng(context, tmp_path / "only_empty.png", size=(200, 200), nodes=[empty])

    assert not _foreground(_pixels(path)).any()
    assert sphereDisplay.GetVisibility3D()


def test_hidden_volume_rendering_is_not_drawn(context, tmp_path):
    volume = volumeFromArray(context, _sphere(), IJK_TO_RAS, "Disagreement")
    rendering.setupVolumeRendering(context, volume, visible=False)

    pixels = _pixels(rendering.renderThreeDViewToPng(context, tmp_path / "hidden.png", size=(200, 200)))

    assert not _foreground(pixels).any()


def test_named_slicer_presets(context):
    volume = volumeFromArray(context, _sphere() * 1000.0, IJK_TO_RAS, "CT")
    assert "CT-Bone" in rendering.presetNames(context)

    display = rendering.setupVolumeRendering(context, volume, preset="CT-Bone")

    assert display.GetVolumePropertyNode().GetName() == "CT-Bone"
    assert rendering.setupVolumeRendering(context, volume) is display  # one display node per volume
    with pytest.raises(ValueError, match="unknown volume rendering preset"):
        rendering.setupVolumeRendering(context, volume, preset="No such preset")


def test_segmentation_surfaces_are_drawn(context, tmp_path):
    labels = (_sphere() > 0.5).astype(np.uint8)
    labelmap = volumeFromArray(context, labels, IJK_TO_RAS, "Labels", labelmap=True)
    segmentation = importLabelmap(context, labelmap, {1: "Liver"})

    path = rendering.renderThreeDViewToPng(context, tmp_path / "surface.png", size=(200, 200), nodes=[segmentation])

    assert segmentation.GetSegmentation().ContainsRepresentation("Closed surface")
    assert _foreground(_pixels(path)).mean() > 0.02
