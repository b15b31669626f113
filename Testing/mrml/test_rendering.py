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


def _slice_scene(context):
    """A CT-like ramp (-1000 at the left to 1000 at the right), a red segment (a sphere of radius 16 voxels)
    and the disagreement sphere, all on the 64^3 grid."""
    ramp = np.broadcast_to(np.linspace(-1000, 1000, SIZE, dtype=np.float32), (SIZE, SIZE, SIZE)).copy()
    ct = volumeFromArray(context, ramp, IJK_TO_RAS, "CT")
    ct.CreateDefaultDisplayNodes()
    ct.GetDisplayNode().SetAutoWindowLevel(False)
    ct.GetDisplayNode().SetWindowLevel(2000, 0)
    k, j, i = np.mgrid[:SIZE, :SIZE, :SIZE]
    ball = (np.sqrt((i - SIZE / 2) ** 2 + (j - SIZE / 2) ** 2 + (k - SIZE / 2) ** 2) < 16).astype(np.uint8)
    labelmap = volumeFromArray(context, ball, IJK_TO_RAS, "Labels", labelmap=True)
    segmentation = importLabelmap(context, labelmap, {1: "Liver"})
    context.scene.RemoveNode(labelmap)
    segment = segmentation.GetSegmentation().GetNthSegment(0)
    segment.SetColor(1.0, 0.0, 0.0)
    disagreement = volumeFromArray(context, _sphere(), IJK_TO_RAS, "Disagreement")
    disagreement.CreateDefaultDisplayNodes()
    display = disagreement.GetDisplayNode()
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeWarm1")
    display.AutoThresholdOff()
    display.SetThreshold(1e-3, 1.0)  # zero is transparent: the CT shows through
    display.ApplyThresholdOn()
    return ct, segmentation, disagreement


def test_slice_view_draws_the_ct_and_the_segments_as_slicer_does(context, tmp_path):
    ct, segmentation, _ = _slice_scene(context)
    nodes_before = context.scene.GetNumberOfNodes()

    pixels = _pixels(rendering.renderSliceViewToPng(context, tmp_path / "axial.png", ct, size=(200, 200)))

    assert pixels.shape == (200, 200, 3)
    row = pixels[
        20
    ]  # above the sphere: the ramp in grey; high i (the patient's right) on the left, as radiologists read
    gray = row[(row.max(axis=-1) > 0)]
    assert (np.ptp(gray, axis=-1) <= 2).all() and gray[0, 0] - gray[-1, 0] > 150
    centre = pixels[90:110, 90:110]  # the sphere's middle: its fill, red over the grey
    assert (centre[..., 0] > centre[..., 1] + 40).all() and (centre[..., 0] > centre[..., 2] + 40).all()
    # nothing of the temporary view stays in the scene
    assert context.scene.GetNumberOfNodes() == nodes_before
    assert context.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode") == 0
    assert context.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode") == 0


def test_slice_view_offset_and_foreground(context, tmp_path):
    ct, segmentation, disagreement = _slice_scene(context)
    segmentation.GetDisplayNode().SetVisibility(False)
    top = IJK_TO_RAS[2, 2] * (SIZE - 2)  # an axial slice near the top: past the sphere and the map

    def render(name, **options):
        path = tmp_path / f"{name}.png"
        return _pixels(rendering.renderSliceViewToPng(context, path, ct, disagreement, 0.6, size=(200, 200), **options))

    above, middle, coronal = render("top", offset=top), render("middle"), render("coronal", orientation="Coronal")

    assert not _warm(above[90:110, 90:110]).any()  # grey only: the map is zero there, the segment hidden
    assert _warm(middle[90:110, 90:110]).all() and _warm(coronal[90:110, 90:110]).all()
    assert (middle[..., 2] < middle[..., 0] - 40).sum() > 0.05 * middle[..., 0].size


def test_the_camera_turns_about_the_content(context, tmp_path):
    """A bar along the i (left-right) axis: wide from the front, a square end when the camera turns 90 degrees."""
    bar = np.zeros((SIZE, SIZE, SIZE), np.float32)
    bar[28:36, 28:36, 4:60] = 1.0
    rendering.setupVolumeRendering(context, volumeFromArray(context, bar, IJK_TO_RAS, "Bar"))

    def extent(**turn) -> tuple[int, int]:
        drawn = _foreground(_pixels(rendering.renderThreeDViewToPng(context, tmp_path / "bar.png", (200, 200), **turn)))
        rows, columns = np.flatnonzero(drawn.any(axis=1)), np.flatnonzero(drawn.any(axis=0))
        return columns[-1] - columns[0], rows[-1] - rows[0]

    width, height = extent()
    assert width > 4 * height
    width, height = extent(azimuth=90)
    assert abs(width - height) <= 0.25 * max(width, height)
