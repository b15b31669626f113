"""Volumes in and out of the scene through Slicer's storage nodes, and their voxels as numpy.

``slicer.util.loadVolume`` needs the desktop application; the Volumes logic and storage nodes
do the same work on slicer-core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support


class VolumeReadError(OSError):
    """An image file that Slicer's readers could not load."""


def loadVolume(context, path: str | Path, name: str | None = None, labelmap: bool = False):
    """Load NRRD/NIfTI/MHA (anything Slicer's archetype reader takes) as a scalar or labelmap volume."""
    path = Path(path)
    if not path.is_file():
        raise VolumeReadError(f"{path}: no such file")
    node = context.volumesLogic.AddArchetypeVolume(str(path), name or fileStem(path), 1 if labelmap else 0)
    if node is None or node.GetImageData() is None:
        raise VolumeReadError(f"{path}: not an image Slicer can read")
    return node


def saveVolume(node, path: str | Path, compress: bool = True) -> Path:
    """Write a volume node (scalar or labelmap) to .nrrd/.nii.gz/.mha through a storage node."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(compress)
    if not storage.WriteData(node):
        raise OSError(f"{path}: Slicer could not write {node.GetName()}")
    return path


def ijkToRas(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def imageDataToArray(imageData) -> np.ndarray:
    """Voxels of a vtkImageData as a (k, j, i) array view."""
    extent = imageData.GetExtent()
    shape = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return numpy_support.vtk_to_numpy(imageData.GetPointData().GetScalars()).reshape(shape)


def arrayFromVolume(node) -> np.ndarray:
    return imageDataToArray(node.GetImageData())


def volumeFromArray(context, array: np.ndarray, ijk_to_ras: np.ndarray, name: str, labelmap: bool = False):
    """A new volume node holding a copy of ``array`` (k, j, i) on the grid ``ijk_to_ras``."""
    className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = context.scene.AddNewNodeByClass(className, name)
    imageData = vtk.vtkImageData()
    imageData.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    vtkArray = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    imageData.GetPointData().SetScalars(vtkArray)
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(ijk_to_ras[r][c]))
    node.SetIJKToRASMatrix(matrix)
    node.SetAndObserveImageData(imageData)
    node.CreateDefaultDisplayNodes()
    return node


def fileStem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
