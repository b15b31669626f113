"""One case made ready for a reader: the image as NRRD and a segmentation holding the protocol's segments."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.protocol import Protocol
from ..core.protocol_check import ProtocolCheck
from .protocol_segments import AppliedProtocol, applyProtocol, checkSegmentation
from .segmentation import importLabelmapFile, newSegmentation, saveSegmentation
from .volumes import fileStem, loadVolume, saveVolume


@dataclass
class PreparedCase:
    volumePath: Path
    segmentationPath: Path
    checkPath: Path
    applied: AppliedProtocol
    check: ProtocolCheck

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
) -> PreparedCase:
    """Write ``<case>.nrrd``, ``<case>.seg.nrrd`` (protocol segments) and ``<case>.check.json`` into ``outDir``.

    With ``labelsPath`` the segments start from an existing labelmap (matched to structures by name);
    otherwise every protocol segment starts empty.
    """
    outDir = Path(outDir)
    caseName = caseName or fileStem(Path(imagePath))
    volume = loadVolume(context, imagePath, name=caseName)
    if labelsPath:
        segmentation = importLabelmapFile(context, labelsPath, labelNames, name=f"{caseName} segmentation")
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    else:
        segmentation = newSegmentation(context, volume, f"{caseName} segmentation")
    applied = applyProtocol(segmentation, protocol)
    check = checkSegmentation(segmentation, protocol)
    volumePath = saveVolume(volume, outDir / f"{caseName}.nrrd")
    segmentationPath = saveSegmentation(segmentation, outDir / f"{caseName}.seg.nrrd")
    checkPath = outDir / f"{caseName}.check.json"
    checkPath.write_text(json.dumps(check.to_json(), indent=1))
    return PreparedCase(volumePath, segmentationPath, checkPath, applied, check)
