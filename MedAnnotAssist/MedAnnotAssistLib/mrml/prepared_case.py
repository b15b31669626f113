"""One case made ready for a reader: the image as NRRD and a segmentation holding the protocol's segments."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.jobs import ProgressCallback, no_progress
from ..core.protocol import Protocol
from ..core.protocol_check import ProtocolCheck
from ..core.structure_names import map_labels
from .protocol_segments import AppliedProtocol, applyProtocol, checkSegmentation
from .segmentation import importLabelmap, newSegmentation, saveSegmentation
from .volumes import arrayFromVolume, fileStem, loadVolume, saveVolume


@dataclass
class PreparedCase:
    volumePath: Path
    segmentationPath: Path
    checkPath: Path
    applied: AppliedProtocol
    check: ProtocolCheck
    dropped: list[str] = field(default_factory=list)  # labels of the labelmap that the protocol lacks

    def slicerInstructions(self) -> str:
        return (
            f"Open it in 3D Slicer: drag and drop {self.volumePath} and then {self.segmentationPath} onto the "
            f"Slicer window (or File > Add Data), or run\n"
            f"  Slicer --python-code \"slicer.util.loadVolume(r'{self.volumePath}'); "
            f"slicer.util.loadSegmentation(r'{self.segmentationPath}')\""
        )


def prepareCase(
    context,
    imagePath: str | Path,
    protocol: Protocol,
    outDir: str | Path,
    labelsPath: str | Path | None = None,
    labelNames: Mapping[int, str] | None = None,
    caseName: str | None = None,
    labelNamesFile: str | Path = "label names",
    progress: ProgressCallback | None = None,
) -> PreparedCase:
    """Write ``<case>.nrrd``, ``<case>.seg.nrrd`` (protocol segments) and ``<case>.check.json`` into ``outDir``.

    With ``labelsPath`` the segments start from an existing labelmap whose labels ``labelNames`` names
    (read from ``labelNamesFile``); each name goes to the protocol structure it stands for
    (``core.structure_names.map_labels``: by code, then by the maintained name map; lung lobes join their lung),
    labels the protocol lacks are dropped (listed in ``dropped``), typos are a ValueError. Protocol structures
    without a label start empty, as every one does without ``labelsPath``.
    """
    report = progress or no_progress
    outDir = Path(outDir)
    caseName = caseName or fileStem(Path(imagePath))
    report(0.0, "reading the image")
    volume = loadVolume(context, imagePath, name=caseName)
    dropped: list[str] = []
    if labelsPath:
        if labelNames is None:
            raise ValueError(f"{labelsPath}: a labelmap needs a JSON map of label values to structure names")
        report(0.2, "reading the labels")
        segmentation, dropped = importProtocolLabels(context, labelsPath, labelNames, protocol, labelNamesFile)
        segmentation.SetName(f"{caseName} segmentation")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    else:
        segmentation = newSegmentation(context, volume, f"{caseName} segmentation")
    report(0.5, "applying the protocol")
    applied = applyProtocol(segmentation, protocol)
    report(0.6, "checking the rules")
    check = checkSegmentation(segmentation, protocol)
    report(0.8, "writing the files")
    volumePath = saveVolume(volume, outDir / f"{caseName}.nrrd")
    segmentationPath = saveSegmentation(segmentation, outDir / f"{caseName}.seg.nrrd")
    checkPath = outDir / f"{caseName}.check.json"
    checkPath.write_text(json.dumps(check.to_json(), indent=1))
    report(1.0, "done")
    return PreparedCase(volumePath, segmentationPath, checkPath, applied, check, dropped)


def importProtocolLabels(context, labelsPath, labelNames, protocol: Protocol, labelNamesFile) -> tuple:
    """The labelmap's labels as one segment per protocol structure (named by its id), and what was dropped."""
    labelmap = loadVolume(context, labelsPath, labelmap=True)
    try:
        labels = arrayFromVolume(labelmap)
        present = np.unique(labels)
        plan = map_labels(labelNames, protocol, present, str(labelNamesFile), str(labelsPath))
        order = {s.id: value for value, s in enumerate(protocol.structures, start=1)}
        target = {value: order[structure.id] for value, structure in plan.structures.items()}
        labels[...] = _relabelled(labels, present, target)  # a structure's parts (lung lobes) share one value
        labelmap.GetImageData().Modified()
        names = {order[s.id]: s.id for s in protocol.structures}
        return importLabelmap(context, labelmap, names), plan.dropped
    finally:
        context.scene.RemoveNode(labelmap)


def _relabelled(labels: np.ndarray, present: np.ndarray, target: Mapping[int, int]) -> np.ndarray:
    if np.issubdtype(labels.dtype, np.integer) and present.size and present.min() >= 0 and present.max() < 2**16:
        lookup = np.zeros(int(present.max()) + 1, labels.dtype)
        for value, new in target.items():
            lookup[value] = new
        return lookup[labels]
    relabelled = np.zeros(labels.shape, labels.dtype)
    for value, new in target.items():
        relabelled[labels == value] = new
    return relabelled
