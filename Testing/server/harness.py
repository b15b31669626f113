"""The real server as a child process, a small HTTP client for the tests, and the files they upload."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from .postgres import free_port

BIN = Path(sys.executable).parent
MEDANNOT = str(BIN / "medannot")


class ServerProcess:
    """``medannot serve`` on a loopback port; its output goes to ``log``."""

    def __init__(self, data_dir: Path, database_url: str | None = None, port: int | None = None, *extra: str):
        self.data_dir, self.database_url = Path(data_dir), database_url
        self.port = port or free_port()
        self.extra = list(extra)
        self.log = self.data_dir.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [MEDANNOT, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port), *self.extra]
        return command + (["--database-url", self.database_url] if self.database_url else [])

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or a container is killed."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def admin_command(*args: str, data_dir: Path, database_url: str | None = None) -> subprocess.CompletedProcess:
    command = [MEDANNOT, "admin", *args, "--data-dir", str(data_dir)]
    if database_url:
        command += ["--database-url", database_url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def create_site_admin(data_dir: Path, database_url: str | None, name: str = "admin") -> str:
    result = admin_command("create-user", name, "--site-admin", data_dir=data_dir, database_url=database_url)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class Api:
    """One user's view of the server: JSON in, ``httpx.Response`` out."""

    base: str
    token: str | None
    name: str = ""
    client: httpx.Client = field(init=False, repr=False)

    def __post_init__(self):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(base_url=self.base, headers=headers, timeout=120)

    def get(self, path: str, **kw) -> httpx.Response:
        return self.client.get(path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.client.post(path, **kw)

    def put(self, path: str, **kw) -> httpx.Response:
        return self.client.put(path, **kw)

    def delete(self, path: str, **kw) -> httpx.Response:
        return self.client.delete(path, **kw)

    def ok(self, response: httpx.Response, status: int = 200) -> dict | list:
        assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
        return response.json()

    def new_user(self, name: str, site_admin: bool = False) -> Api:
        body = self.ok(self.post("/api/v1/users", json={"name": name, "site_admin": site_admin}), 201)
        return Api(self.base, body["token"], name)

    def new_project(
        self, name: str, protocol_id: str = "abdominal-organs", readers: int = 2, review: bool = True
    ) -> int:
        body = {"name": name, "protocol_id": protocol_id, "readers_per_case": readers, "review": review}
        return self.ok(self.post("/api/v1/projects", json=body), 201)["id"]

    def set_roles(self, project_id: int, user: str, *roles: str) -> None:
        self.ok(self.put(f"/api/v1/projects/{project_id}/members/{user}", json={"roles": list(roles)}))

    def upload_image(self, project_id: int, path: Path) -> dict:
        with open(path, "rb") as handle:
            files = {"image": (path.name, handle, "application/octet-stream")}
            return self.ok(self.post(f"/api/v1/projects/{project_id}/images", files=files), 201)

    def upload_case(self, project_id: int, path: Path, name: str, priority: float = 0.0) -> dict:
        with open(path, "rb") as handle:
            files = {"image": (path.name, handle, "application/octet-stream")}
            data = {"name": name, "priority": str(priority)}
            return self.ok(self.post(f"/api/v1/projects/{project_id}/cases", files=files, data=data), 201)

    def claim(self, project_id: int, **body) -> dict | None:
        return self.ok(self.post(f"/api/v1/projects/{project_id}/tasks/claim", json=body))["task"]

    def submit(
        self, project_id: int, task: dict, path: Path, metadata: dict | None = None, key: str | None = None
    ) -> httpx.Response:
        metadata = metadata if metadata is not None else tiny_metadata()  # a tiny segmentation's
        headers = {"Idempotency-Key": key} if key else {}
        import json

        with open(path, "rb") as handle:
            files = {"segmentation": (path.name, handle, "application/octet-stream")}
            data = {"lease_id": task["lease_id"], "metadata": json.dumps(metadata)}
            return self.post(
                f"/api/v1/projects/{project_id}/tasks/{task['id']}/submissions", files=files, data=data, headers=headers
            )

    def close(self) -> None:
        self.client.close()


def wait_for_consensus(api: Api, project_id: int, case_id: int, timeout: float = 180.0) -> dict:
    """Poll a case whose readers are all in until its consensus job has moved it on (review open, or approved
    when review is off); returns the case. A failed job fails the test with its reason. ``api``: a reviewer
    or an admin (who see the case's consensus state)."""
    deadline = time.monotonic() + timeout
    while True:
        case = api.ok(api.get(f"/api/v1/projects/{project_id}/cases/{case_id}"))
        job = case.get("consensus")
        if case["state"] != "annotating":
            return case
        assert not (job and job["state"] == "failed"), f"consensus of case {case_id} failed: {job['error']}"
        assert time.monotonic() < deadline, f"case {case_id} still annotating after {timeout} s; consensus: {job}"
        time.sleep(0.1)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- files ---------------------------------------------------------------------------------------------


def readers_as_seg_nrrd(sample_dir: Path, out: Path) -> list[Path]:
    """The two real readers (TotalSegmentator full and fast) as Slicer .seg.nrrd files of abdominal-organs."""
    import SimpleITK as sitk

    from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd
    from MedAnnotAssistLib.core.protocol import bundled_protocol
    from Testing.readers import ABDOMEN_LABELS

    protocol = bundled_protocol("abdominal-organs")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("example_seg", "example_seg_fast"):
        image = sitk.ReadImage(str(sample_dir / f"{name}.nii.gz"))
        values = sitk.GetArrayFromImage(image)
        labels, segments = np.zeros(values.shape, np.uint8), []
        for index, (value, structure_id) in enumerate(ABDOMEN_LABELS.items(), start=1):
            labels[values == value] = index
            segments.append((index, protocol.structure(structure_id)))
        paths.append(write_seg_nrrd(out / f"{name}.seg.nrrd", labels, Geometry.of(image), segments, protocol))
    return paths


TINY_SIZE = (12, 10, 6)  # i, j, k
TINY_REASON = "synthetic 12 x 10 x 6 voxel test image: no organ fits, the test is about the queue"


def tiny_metadata(time_spent_s: float = 60.0) -> dict:
    """Submission metadata for a tiny segmentation: no organ of real size fits the tiny image, so it fails
    the protocol's volume and completeness rules, and every structure carries an override with the reason."""
    return {"time_spent_s": time_spent_s, "overrides": [dict(o) for o in _tiny_overrides()]}


@functools.cache
def _tiny_overrides() -> tuple[dict, ...]:
    from MedAnnotAssistLib.core.protocol import bundled_protocol

    return tuple({"structure": s.id, "reason": TINY_REASON} for s in bundled_protocol("abdominal-organs").structures)


# The sample CT is cropped to 30 slices: its pancreas is cut into pieces and too small for an adult's, and
# TotalSegmentator's fast model leaves a stray island on the right kidney. Readers keep them, with reasons.
SAMPLE_OVERRIDES = [
    {"structure": "pancreas", "reason": "the CT is cropped to 30 slices: the pancreas is cut into pieces"},
    {
        "structure": "kidney_right",
        "rule": "maxComponents",
        "reason": "the fast model's stray island: left for the reviewer to judge",
    },
]


def tiny_geometry(spacing=(2.0, 2.0, 3.0)):
    from MedAnnotAssistLib.core.labelio import Geometry

    return Geometry(TINY_SIZE, spacing, (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def tiny_image(path: Path) -> Path:
    """A small synthetic CT-like volume: fast to upload, read and validate thousands of times."""
    from MedAnnotAssistLib.core.labelio import write_volume

    rng = np.random.default_rng(7)
    array = rng.integers(-100, 200, size=TINY_SIZE[::-1]).astype(np.int16)
    return write_volume(path, array, tiny_geometry())


def tiny_segmentation(
    path: Path, seed: int = 0, structure_ids=("liver",), geometry=None, name: str | None = None, tag: str = ""
):
    """A .seg.nrrd on the tiny image's grid with one box per structure (``name`` renames the first; a
    ``tag`` makes the file's bytes unique)."""
    from dataclasses import replace

    from MedAnnotAssistLib.core.labelio import write_seg_nrrd
    from MedAnnotAssistLib.core.protocol import bundled_protocol

    protocol = bundled_protocol("abdominal-organs")
    labels = np.zeros(TINY_SIZE[::-1], np.uint8)
    segments = []
    for value, structure_id in enumerate(structure_ids, start=1):
        k = (seed + value) % 3
        labels[k : k + 3, 2:6, 3 + value : 7 + value] = value
        structure = protocol.structure(structure_id)
        if name and value == 1:
            structure = replace(structure, id=name.lower(), name=name)
        segments.append((value, structure))
    extra = {"Test.Tag": tag} if tag else None
    return write_seg_nrrd(path, labels, geometry or tiny_geometry(), segments, protocol, extra)


def refused(queue, response: httpx.Response, status: int, code: str, *words: str) -> dict:
    """A refusal as the API promises it: the status, a JSON body with the stable ``code`` and a message holding
    ``words``; and the server still up."""
    assert response.status_code == status, response.text[:2000]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    for word in words:
        assert word in body["message"], body
    assert httpx.get(queue.url + "/api/v1/health").json()["status"] == "ok"
    return body
