"""The server's memory per upload is bounded, measured as the real server process's peak RSS (VmHWM, reset
before each step):
a decompression bomb is refused from its header, and an accepted upload peaks at no more than three
times its decompressed size above what the server held before."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedAnnotAssistLib.core.labelio import Geometry
from MedAnnotAssistLib.core.protocol import bundled_protocol

from .harness import tiny_segmentation, unique

MB = 1024 * 1024
SHAPE = (160, 256, 256)  # k, j, i
# what a request costs besides its voxels (buffers, allocator slack), measured at 2-6 MiB
FIXED_OVERHEAD = 16 * MB


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _reset_peak(pid: int) -> int:
    """Start a new peak (Linux: 5 to clear_refs sets VmHWM to the current RSS); returns that RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _status(pid, "VmRSS")


def _peak_above(pid: int, start: int) -> int:
    return _status(pid, "VmHWM") - start


def _bomb(element_type: str, layers: int) -> bytes:
    """The issue's 131 KB .seg.nrrd: one label layer per list element on the tiny image's 12 x 10 x 6 grid."""
    width = {"int64": 8, "uint8": 1}[element_type]
    header = (
        f"NRRD0004\ntype: {element_type}\ndimension: 4\nsizes: {layers} 12 10 6\nkinds: list domain domain domain\n"
        "space: left-posterior-superior\nspace directions: none (2,0,0) (0,2,0) (0,0,3)\nspace origin: (0,0,0)\n"
        "endian: little\nencoding: gzip\nSegment0_Name:=Liver\nSegment0_LabelValue:=1\nSegment0_Layer:=0\n\n"
    )
    return header.encode() + gzip.compress(b"\0" * (layers * 12 * 10 * 6 * width), 9)


def _write(tmp_path) -> tuple[Path, Path, int, int]:
    """A CT volume (int16) and a four-layer .seg.nrrd (uint8 per layer) on its grid, and their voxel bytes."""
    geometry = Geometry(SHAPE[::-1], (0.8, 0.8, 2.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    k, j, i = np.indices(SHAPE, dtype=np.int16)
    ct = sitk.GetImageFromArray((k * 7 + j * 3 - i).astype(np.int16))
    geometry.apply(ct)
    image_path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(ct, str(image_path), useCompression=True)
    box = np.zeros(SHAPE, np.uint8)
    box[20:120, 40:200, 60:180] = 1
    layers = sitk.GetImageFromArray(np.stack([box, 1 - box, box, 1 - box], axis=-1), isVector=True)
    geometry.apply(layers)
    for index, structure in enumerate(bundled_protocol("abdominal-organs").structures[:4]):
        for key, value in (("Name", structure.name), ("Layer", str(index)), ("LabelValue", "1")):
            layers.SetMetaData(f"Segment{index}_{key}", value)
    seg_path = tmp_path / "four-layers.seg.nrrd"
    sitk.WriteImage(layers, str(seg_path), useCompression=True)
    return image_path, seg_path, ct.GetNumberOfPixels() * 2, box.size * 4


@pytest.mark.slow
def test_upload_memory_is_bounded(start_queue, tiny_image_file, tmp_path):
    queue = start_queue("sqlite", "--max-image-mb", "64")
    admin, pid = queue.admin, queue.server.process.pid
    reader = admin.new_user(unique("reader"))
    project = admin.new_project(unique("memory"), readers=1, review=False)
    admin.set_roles(project, reader.name, "annotator")
    # warm up: the first image and segmentation load SimpleITK's readers
    admin.upload_case(project, tiny_image_file, "tiny")
    task = reader.claim(project)
    assert reader.submit(project, task, tiny_segmentation(tmp_path / "t.seg.nrrd")).status_code == 201

    def submit(content: bytes, name: str):
        task = reader.claim(project)
        files = {"segmentation": (name, content)}
        data = {"lease_id": task["lease_id"], "metadata": '{"time_spent_s": 1}'}
        url = f"/api/v1/projects/{project}/tasks/{task['id']}/submissions"
        response = reader.post(url, files=files, data=data)
        reader.post(f"/api/v1/projects/{project}/tasks/{task['id']}/release", json={"lease_id": task["lease_id"]})
        return response

    admin.upload_case(project, tiny_image_file, "tiny-2")
    start = _reset_peak(pid)
    for _ in range(3):  # 134 MB of int64 in 131 KB: refused from the header, nothing decoded
        body = submit(_bomb("int64", 23301), "bomb.seg.nrrd").json()
        assert body["code"] == "image_too_large" and "134213760 bytes once decompressed" in body["message"], body
    body = submit(_bomb("int64", 2), "int64.seg.nrrd").json()
    assert body["code"] == "invalid_segmentation" and "64-bit signed integer voxels" in body["message"], body
    body = submit(_bomb("uint8", 23301), "layers.seg.nrrd").json()
    assert body["code"] == "invalid_segmentation" and "23301 layers" in body["message"], body
    big = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1000 1000 100\nencoding: gzip\n\n" + gzip.compress(b"\0" * 1000)
    body = submit(big, "big.seg.nrrd").json()
    assert body["code"] == "image_too_large" and body["limit_bytes"] == 64 * MB, body
    bombs = _peak_above(pid, start)
    assert bombs < FIXED_OVERHEAD, f"refusing the bombs raised the peak RSS by {bombs / MB:.0f} MiB"

    image_path, seg_path, image_bytes, seg_bytes = _write(tmp_path)
    start = _reset_peak(pid)
    case = admin.upload_case(project, image_path, "ct", priority=10)  # claimed first
    image_peak = _peak_above(pid, start)
    assert image_peak <= 3 * image_bytes + FIXED_OVERHEAD, f"{image_peak / MB:.0f} MiB for {image_bytes / MB:.0f} MiB"
    start = _reset_peak(pid)
    task = reader.claim(project)
    assert task["case_id"] == case["id"]
    assert reader.submit(project, task, seg_path).status_code == 201
    seg_peak = _peak_above(pid, start)
    assert seg_peak <= 3 * seg_bytes + FIXED_OVERHEAD, f"{seg_peak / MB:.0f} MiB for {seg_bytes / MB:.0f} MiB"
    ratios = f"image {image_peak / image_bytes:.2f} x {image_bytes / MB:.0f} MiB"
    ratios += f", segmentation {seg_peak / seg_bytes:.2f} x {seg_bytes / MB:.0f} MiB, bombs {bombs / MB:.1f} MiB"
    print(f"\npeak RSS above the server's own: {ratios}")
