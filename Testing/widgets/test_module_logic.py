"""The module logic as the widget calls it on Slicer's GUI thread: long or networked work goes to a worker."""

from __future__ import annotations

import socket

import numpy as np

from MedAnnotAssistLib.core.engines.base import EngineUnavailable
from MedAnnotAssistLib.mrml.segmentation import segmentMasks
from MedAnnotAssistLib.mrml.volumes import loadVolume, volumeFromArray
from Testing.widgets.conftest import MODULE_FILE


def test_presegmentation_asks_a_monai_label_server_only_from_the_worker(slicer_app):
    """The MONAI Label engine's description comes from its server: starting must not wait for it."""
    module = slicer_app.loadModule(MODULE_FILE)
    volume = volumeFromArray(slicer_app.context, np.zeros((4, 8, 8), np.int16), np.eye(4), "CT")
    with socket.socket() as probe:  # a loopback port nobody listens on: the server is down
        probe.bind(("127.0.0.1", 0))
        server = f"http://127.0.0.1:{probe.getsockname()[1]}"

    job = module.MedAnnotAssistLogic().startPresegmentation(volume, "monai-label", server=server)  # returns at once

    error = job.exception(timeout=30)
    assert isinstance(error, EngineUnavailable) and f"MONAI Label server {server} is not reachable" in str(error)


def test_presegmentation_result_reaches_the_scene_on_the_calling_thread(slicer_app, sample_dir):
    module = slicer_app.loadModule(MODULE_FILE)
    logic = module.MedAnnotAssistLogic()
    ct = loadVolume(slicer_app.context, sample_dir / "example_ct_sm.nii.gz", name="CT")

    job = logic.startPresegmentation(ct, "ct", ["body", "skeleton"])
    job.result(timeout=120)
    node = logic.finishPresegmentation(job, ct)

    masks, _ = segmentMasks(node)
    names = {node.GetSegmentation().GetSegment(i).GetName(): int(m.sum()) for i, m in masks.items()}
    assert set(names) == {"Body", "Skeleton"} and all(names.values())
    assert names["Skeleton"] < names["Body"]
