"""The report's slice pictures: every panel upright (radiological) and shaped by the spacing, with or without
the case image under it."""

from __future__ import annotations

import numpy as np
import pytest

from MedAnnotAssistLib.core import report
from MedAnnotAssistLib.core.consensus import compute_consensus
from MedAnnotAssistLib.core.labelio import Geometry, ReaderLabels
from MedAnnotAssistLib.core.protocol import bundled_protocol

SHAPE = (5, 24, 30)  # k, j, i
SPACING = (0.8, 2.0, 2.5)  # i, j, k in mm: a voxel is drawn 2.5 times as tall as it is wide
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
J_ANTERIOR = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # rows run toward the front: shown flipped


def _readers(direction) -> list[ReaderLabels]:
    """Three readers of an L: a thick bar along the top (low j, posterior) and one down the left (low i)."""
    truth = np.zeros(SHAPE, np.uint8)
    truth[1:4, 4:10, 4:26] = 1
    truth[1:4, 4:20, 4:9] = 1
    wider, shorter = truth.copy(), truth.copy()
    wider[2, 4:10, 26:28] = 1
    shorter[2, 18:20, 4:9] = 0
    geometry = Geometry(SHAPE[::-1], SPACING, (0.0, 0.0, 0.0), direction)
    return [ReaderLabels(name, None, geometry, [labels], {"liver": (0, 1)}) for name, labels in
            (("a", truth), ("b", wider), ("c", shorter))]  # fmt: skip


def _drawn(monkeypatch, direction, image):
    """Each panel of the liver's overlay figure as drawn: (its pixels, the voxels meant to be coloured)."""
    result = compute_consensus(_readers(direction), bundled_protocol("abdominal-organs"))
    item = result.structure("liver")
    captured = []
    monkeypatch.setattr(report, "_png", lambda figure: captured.append(figure) or "data:")
    assert report._overlay_figure(result, item, image) == "data:"
    [figure] = captured
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(int)
    k = int(np.argmax(item.disagreement.sum(axis=(1, 2))))
    wanted = [*(mask[k] for mask in item.masks), item.consensus[k], item.disagreement[k] > 0]
    panels = []
    for axis, voxels in zip(figure.axes, wanted, strict=False):  # the colour bar's axis comes last
        box = axis.get_window_extent()
        top, bottom = pixels.shape[0] - int(round(box.y1)), pixels.shape[0] - int(round(box.y0))
        panels.append((pixels[top:bottom, int(round(box.x0)) : int(round(box.x1))], voxels))
    return panels, item.masks[0].shape[1:]


@pytest.mark.parametrize("direction", [IDENTITY, J_ANTERIOR], ids=["j-posterior", "j-anterior"])
@pytest.mark.parametrize("with_image", [False, True], ids=["no-image", "image"])
def test_every_panel_is_upright_and_has_the_aspect_of_the_spacing(monkeypatch, direction, with_image):
    image = np.linspace(-100, 100, np.prod(SHAPE)).reshape(SHAPE) if with_image else None
    panels, (rows, columns) = _drawn(monkeypatch, direction, image)
    assert len(panels) == 5  # three readers, the consensus, the disagreement map
    physical = rows * SPACING[1] / (columns * SPACING[0])
    for number, (pixels, voxels) in enumerate(panels):
        height, width, _ = pixels.shape
        assert height / width == pytest.approx(physical, rel=0.04), f"panel {number}: {height}x{width} pixels"
        coloured = np.argwhere(pixels.max(axis=2) - pixels.min(axis=2) > 25)
        drawn_row, drawn_column = (coloured + 0.5).mean(axis=0) / (height, width)
        row, column = (np.argwhere(voxels) + 0.5).mean(axis=0) / (rows, columns)
        if direction[4] < 0:
            row = 1 - row
        assert (drawn_row, drawn_column) == pytest.approx((row, column), abs=0.04), f"panel {number}"
