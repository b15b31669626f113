"""The MONAI Label engine against a REAL MONAI Label server and against a recorded double of it.

Real: ``monailabel start_server`` (MONAI Label 0.8.5) with the tiny app in ``monailabel_app/``, whose
"models" threshold the uploaded CT (no weights). MONAI Label pulls torch, and its pydicom-seg pins numpy < 2
and jsonschema < 4, so it lives in its own virtual environment: set MEDANNOT_MONAILABEL_PYTHON to that
environment's python (or install it into this one). The real-server cases carry the marker
``monailabel_server``: `make test` leaves them out (torch and its CUDA wheels are several GB), and
`make test-monailabel` builds that environment under var/ and runs them.

Double: ``RecordedMonaiLabel``, a stdlib http.server on loopback that answers with the responses
recorded from that real server (the /info/ JSON verbatim, the multipart infer answer with the same parts
and headers), so the HTTP layer is tested everywhere. Every scenario runs against both.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from MedAnnotAssistLib.core.engines import EngineError, EngineUnavailable, get_engine, list_engines
from MedAnnotAssistLib.core.engines.monailabel import MonaiLabelEngine, label_values
from MedAnnotAssistLib.core.jobs import CancelledError
from MedAnnotAssistLib.core.protocol import bundled_protocol

APP_DIR = Path(__file__).parent / "monailabel_app"
BANDS = [(0, 150, 1), (150, 300, 2), (300, 1e9, 3)]  # as in monailabel_app/main.py
# GET /info/ as answered by the real server running monailabel_app (MONAI Label 0.8.5), verbatim
RECORDED_INFO = (
    '{"name":"threshold-test-app","description":"Deterministic test app","version":"2.0","labels":["liver",'
    '"Left Kidney","bright stuff"],"models":{"threshold":{"type":"segmentation","labels":{"liver":1,"Left Kidney":2,'
    '"bright stuff":3},"dimension":3,"description":"Intensity bands of the CT","config":{}},"mismatch":{"type":'
    '"segmentation","labels":{"liver":1},"dimension":3,"description":"Wrong label list","config":{}},"refuses":'
    '{"type":"segmentation","labels":{"liver":1,"Left Kidney":2,"bright stuff":3},"dimension":3,"description":'
    '"Always refuses","config":{}},"crashes":{"type":"segmentation","labels":{"liver":1,"Left Kidney":2,'
    '"bright stuff":3},"dimension":3,"description":"Always crashes","config":{}}},"trainers":{},"strategies":{},'
    '"scoring":{},"train_stats":{},"datastore":{"total":0,"completed":0,"label_tags":{}}}'
)


def threshold(hu: np.ndarray, bands) -> np.ndarray:
    labels = np.zeros(hu.shape, np.uint8)
    for low, high, value in bands:
        labels[(hu > low) & (hu <= high)] = value
    return labels


class RecordedMonaiLabel(BaseHTTPRequestHandler):
    """TEST DOUBLE of a MONAI Label 0.8.5 server: replays the answers recorded from the real one.

    ``labelmaps`` (model -> NIfTI bytes) are the files the real app returns for the test CT; requests are
    kept in ``requests`` for the tests to inspect; ``token`` makes it answer 401 without that bearer token.
    """

    labelmaps: dict[str, bytes] = {}
    requests: list[dict] = []
    token: str | None = None

    def log_message(self, *args):
        pass

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self._send(401, "application/json", b'{"detail":"Not authenticated"}')
            return False
        return True

    def do_GET(self):
        if not self._authorised():
            return
        if self.path == "/info/":
            self._send(200, "application/json", RECORDED_INFO.encode())
        else:
            self._send(404, "application/json", b'{"detail":"Not Found"}')

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if not self._authorised():
            return
        model = self.path.split("?")[0].removeprefix("/infer/")
        if model == "refuses":
            return self._send(422, "application/json", b'{"detail":"threshold model: the image has no body voxels"}')
        if model == "crashes":
            return self._send(500, "text/plain; charset=utf-8", b"Internal Server Error")
        if model not in self.labelmaps:
            return self._send(500, "text/plain; charset=utf-8", b"Internal Server Error")
        names = {"liver": 1} if model == "mismatch" else {"liver": 1, "Left Kidney": 2, "bright stuff": 3}
        params = json.dumps({"label_names": names, "bands": [list(b) for b in BANDS]})
        boundary = uuid.uuid4().hex  # requests_toolbelt's MultipartEncoder, as the server uses
        answer = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\nContent-Type: application/json\r\n\r\n'
            f'{params}\r\n--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="tmpb3wltu9l.nii.gz"'
            "\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).encode()
        answer += self.labelmaps[model] + f"\r\n--{boundary}--\r\n".encode()
        self._send(200, f"multipart/form-data; boundary={boundary}", answer)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _monailabel_python() -> str | None:
    python = os.environ.get("MEDANNOT_MONAILABEL_PYTHON")
    if python:
        return python
    return sys.executable if importlib.util.find_spec("monailabel") else None


@pytest.fixture(scope="module")
def ct(sample_dir):
    import SimpleITK as sitk

    return sitk.ReadImage(str(sample_dir / "example_ct_sm.nii.gz"))


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """A real MONAI Label server with monailabel_app, on a free loopback port, for this module."""
    python = _monailabel_python()
    if python is None:
        pytest.skip(
            "MONAI Label is not installed: python -m venv V && V/bin/pip install monailabel==0.8.5 'pydicom<3' "
            "'dicomweb-client<0.60' 'pynetdicom<3', then set MEDANNOT_MONAILABEL_PYTHON=V/bin/python"
        )
    work = tmp_path_factory.mktemp("monailabel")
    shutil.copytree(APP_DIR, work / "app", ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin", "lib"))
    (work / "studies").mkdir()
    port, log = _free_port(), work / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MONAI_LABEL_SESSION_PATH=str(work / "sessions"), MONAI_LABEL_DATASTORE_AUTO_RELOAD="false")
    command = [python, "-m", "monailabel.main", "start_server", "--app", str(work / "app"), "--studies"]
    command += [str(work / "studies"), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as stream:
        server = subprocess.Popen(
            command, stdout=stream, stderr=subprocess.STDOUT, cwd=work, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/info/", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"MONAI Label did not start: {log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@pytest.fixture(scope="module")
def double_server(ct, tmp_path_factory):
    """The recorded double on a free loopback port; its labelmaps are the real app's answers for ``ct``."""
    import SimpleITK as sitk

    folder = tmp_path_factory.mktemp("double")
    hu = sitk.GetArrayFromImage(ct).astype(np.float64)
    labelmaps = {}
    for model, bands in (("threshold", BANDS), ("mismatch", [(0, 150, 1), (300, 1e9, 2)])):
        image = sitk.GetImageFromArray(threshold(hu, bands))
        image.CopyInformation(ct)
        sitk.WriteImage(image, str(folder / f"{model}.nii.gz"))
        labelmaps[model] = (folder / f"{model}.nii.gz").read_bytes()
    handler = type("Recorded", (RecordedMonaiLabel,), {"labelmaps": labelmaps, "requests": [], "token": None})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(params=[pytest.param("real", marks=pytest.mark.monailabel_server), "double"])
def server(request) -> str:
    if request.param == "real":
        return request.getfixturevalue("real_server")
    return request.getfixturevalue("double_server")[0]


def test_info_maps_monai_label_names_to_codes(server):
    info = MonaiLabelEngine(server, model="threshold").info()
    assert [s.id for s in info.structures] == ["liver", "kidney_left", "bright_stuff"]
    protocol = bundled_protocol("abdominal-organs")
    for engine_id in ("liver", "kidney_left"):
        expected = protocol.structure(engine_id).terminology
        got = info.structure(engine_id).terminology
        assert (got.type, got.type_modifier) == (expected.type, expected.type_modifier)
    unknown = info.structure("bright_stuff")
    assert unknown.name == "bright stuff" and unknown.terminology.type.meaning == "Anatomical structure"
    assert info.version == "2.0" and "threshold-test-app" in info.description


def test_segments_the_real_ct(server, ct):
    import SimpleITK as sitk

    reports = []
    engine = get_engine("monai-label", server=server, model="threshold")
    result = engine.run(ct, progress=lambda f, m: reports.append(f))
    expected = threshold(sitk.GetArrayFromImage(ct).astype(np.float64), BANDS)
    np.testing.assert_array_equal(result.labels, expected)
    assert result.names == {1: "liver", 2: "kidney_left", 3: "bright_stuff"}
    assert result.confidence == {} and 0.0 <= result.uncertainty <= 1.0
    assert result.provenance["engine"] == "monai-label" and result.provenance["parameters"]["model"] == "threshold"
    assert reports[-1] == 1.0
    subset = engine.run(ct, structures=["kidney_left"])
    assert subset.names == {2: "kidney_left"} and set(np.unique(subset.labels)) == {0, 2}


def test_label_list_that_does_not_match_the_output(server, ct):
    with pytest.raises(
        EngineError, match=r"returned label values \[2\] that its label list does not name \(1: liver\)"
    ):
        MonaiLabelEngine(server, model="mismatch").run(ct)


def test_http_errors_carry_the_servers_message(server, ct):
    with pytest.raises(
        EngineError, match=r"POST /infer/refuses failed with HTTP 422 .*: threshold model: the image has no"
    ):
        MonaiLabelEngine(server, model="refuses").run(ct)
    with pytest.raises(EngineError, match=r"POST /infer/crashes failed with HTTP 500 .*: Internal Server Error"):
        MonaiLabelEngine(server, model="crashes").run(ct)


def test_model_choice(server):
    with pytest.raises(EngineError, match=r"has no model 'nosuch' \(it has threshold, mismatch, refuses, crashes\)"):
        MonaiLabelEngine(server, model="nosuch").info()
    with pytest.raises(EngineError, match="several models .*: choose one with model="):
        MonaiLabelEngine(server).info()


def test_the_upload_is_the_image_with_params(double_server, ct, tmp_path):
    import SimpleITK as sitk

    url, handler = double_server
    handler.requests.clear()
    MonaiLabelEngine(url, model="threshold", params={"largest_cc": True}).run(ct)
    sent = handler.requests[-1]
    assert sent["path"].startswith("/infer/threshold?image=medannot-") and sent["path"].endswith("&output=all")
    header = f"Content-Type: {sent['headers']['Content-Type']}\r\n\r\n".encode()
    parts = {
        p.get_param("name", header="content-disposition"): p
        for p in BytesParser().parsebytes(header + sent["body"]).get_payload()
    }
    assert json.loads(parts["params"].get_payload()) == {"client_id": "medannotassist", "largest_cc": True}
    (tmp_path / "up.nii.gz").write_bytes(parts["file"].get_payload(decode=True))
    uploaded = sitk.ReadImage(str(tmp_path / "up.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(uploaded), sitk.GetArrayFromImage(ct))
    assert uploaded.GetSpacing() == pytest.approx(ct.GetSpacing())


def test_token(double_server, ct):
    url, handler = double_server
    handler.token = "secret"
    try:
        with pytest.raises(EngineError, match=r"HTTP 401 .*Not authenticated \(the server needs a token"):
            MonaiLabelEngine(url, model="threshold").info()
        assert MonaiLabelEngine(url, model="threshold", token="secret").run(ct).names[1] == "liver"
        assert handler.requests[-1]["headers"]["Authorization"] == "Bearer secret"
    finally:
        handler.token = None


def test_unreachable_server_names_the_url(ct):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(
        EngineUnavailable, match=rf"MONAI Label server {url} is not reachable .*monailabel start_server"
    ):
        MonaiLabelEngine(url, model="threshold").run(ct)
    with pytest.raises(EngineError, match="expected a MONAI Label server URL"):
        MonaiLabelEngine("localhost:8000")


def test_cancel_before_upload_and_on_answer(double_server, ct):
    url, handler = double_server
    handler.requests.clear()
    with pytest.raises(CancelledError):
        MonaiLabelEngine(url, model="threshold").run(ct, cancel=lambda: True)
    assert handler.requests == []  # nothing uploaded
    reports = []
    with pytest.raises(CancelledError):
        MonaiLabelEngine(url, model="threshold").run(
            ct, progress=lambda f, m: reports.append(f), cancel=lambda: bool(reports)
        )
    assert len(handler.requests) == 1  # the answer came and was discarded


def test_label_lists_and_probe():
    assert label_values({"background": 0, "spleen": 1, "liver": 6}) == {1: "spleen", 6: "liver"}
    assert label_values(["spleen", "liver"]) == {1: "spleen", 2: "liver"}
    assert label_values(["background", "spleen"]) == {1: "spleen"}
    row = next(r for r in list_engines() if r["name"] == "monai-label")
    assert row["usable"] and "--server URL" in row["detail"]
