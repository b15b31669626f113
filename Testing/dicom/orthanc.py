"""A real Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) started by the tests, on loopback.

``start_orthanc`` runs the binary with a temporary JSON configuration (own storage folder, free HTTP and
DICOM ports, the DICOMweb plugin at ``/dicom-web/``, remote access off) and waits until ``/system``
answers. Two flavours are offered as session fixtures:

- ``orthanc_server``: Orthanc's own HTTP basic authentication with one registered test user;
- ``orthanc_bearer_server``: authentication off and a Lua ``IncomingHttpRequestFilter`` (built into
  Orthanc, no plugin) that lets a request through only when it carries ``Authorization: Bearer <token>``,
  because Debian ships no authorization plugin that could check tokens. Orthanc answers 403 otherwise.

There is no https flavour: Debian's Orthanc 1.10.1 (civetweb with OpenSSL 3) starts with "SslEnabled" but
its HTTP worker segfaults on the first TLS handshake.

Orthanc listens on 0.0.0.0 (no option restricts it): tests talk to 127.0.0.1 only, HTTP remote access is
off and the DICOM port accepts nothing from unknown modalities.

Import elsewhere with ``from Testing.dicom.orthanc import orthanc_server`` (pytest finds fixtures by name
in the importing module), or use ``start_orthanc`` directly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ORTHANC_BINARY = os.environ.get("MEDANNOT_ORTHANC", shutil.which("Orthanc") or "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get("MEDANNOT_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
TEST_USER, TEST_PASSWORD = "annotator", "orthanc-test-password"
TEST_TOKEN = "medannot-test-token-7f3a"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Orthanc 1.10 stops its HTTP server in ~2-4 s (civetweb's poll interval); allow well beyond that
STOP_GRACE_S = 15.0

BEARER_FILTER_LUA = """
-- Lets a request in only with the expected bearer token (Orthanc's built-in Lua hook, no plugin).
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return httpHeaders['authorization'] == 'Bearer {token}'
end
"""


def missing_orthanc() -> str | None:
    """Why Orthanc with the DICOMweb plugin cannot run here, or None when it can."""
    if not (os.path.isfile(ORTHANC_BINARY) and os.access(ORTHANC_BINARY, os.X_OK)):
        return f"Orthanc binary not found at {ORTHANC_BINARY} (apt-get install orthanc, or set MEDANNOT_ORTHANC)"
    if not os.path.isfile(DICOMWEB_PLUGIN):
        return f"Orthanc DICOMweb plugin not found at {DICOMWEB_PLUGIN} (apt-get install orthanc-dicomweb)"
    return None


def require_orthanc() -> None:
    """Fail in CI, skip locally, when Orthanc is not installed."""
    reason = missing_orthanc()
    if reason:
        if IN_CI:
            pytest.fail(f"CI needs a real Orthanc: {reason}")
        pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on every interface (Orthanc binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def orthanc_config(
    workdir: Path,
    http_port: int,
    dicom_port: int,
    users: dict[str, str] | None = None,
    lua_scripts: list[str] | None = None,
) -> dict:
    """The JSON configuration of a throw-away Orthanc (documented in docs/dicomweb.md)."""
    return {
        "Name": "MedAnnotAssist test",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": "MEDANNOTTEST",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": users or {},
        # the DICOM port is open on all interfaces: accept no association from anyone unknown
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomModalities": {},
        "Plugins": [DICOMWEB_PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "LuaScripts": lua_scripts or [],
        "SaveJobs": False,
        "WebDavEnabled": False,
        "HttpThreadsCount": 8,
    }


@dataclass
class OrthancServer:
    """One running Orthanc: where it answers, how to authenticate, and its log."""

    process: subprocess.Popen
    workdir: Path
    http_port: int
    dicom_port: int
    user: str | None = None
    password: str | None = None
    token: str | None = None
    startup_s: float = 0.0
    version: str = ""
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def auth_headers(self) -> dict[str, str]:
        """Headers that get through this server's authentication (for its REST API)."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.user:
            import base64

            pair = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {}

    def rest(self, method: str, path: str, **kwargs):
        """A call to Orthanc's own REST API (not DICOMweb), authenticated."""
        import requests

        headers = {**self.auth_headers(), **kwargs.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, grace_s: float = STOP_GRACE_S) -> None:
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        if self._log is not None:
            self._log.close()

    def stop(self) -> None:
        """Terminate, then kill after a grace period."""
        self.terminate()
        self.wait_stopped()


def _wait_until_up(server: OrthancServer, timeout_s: float) -> dict | None:
    """Orthanc's /system answer once it serves HTTP, or None when the process died first."""
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return None
        try:
            answer = requests.get(f"{server.url}/system", headers=server.auth_headers(), timeout=2)
            if answer.status_code == 200:
                return answer.json()
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    return None


def start_orthanc(
    workdir: Path,
    *,
    user: str | None = None,
    password: str | None = None,
    token: str | None = None,
    timeout_s: float = 30.0,
    attempts: int = 3,
) -> OrthancServer:
    """Start Orthanc in ``workdir`` with basic auth (``user``/``password``), a bearer-token filter
    (``token``) or no authentication, and return it once ``/system`` answers.
    Retries with new ports when one was taken in between."""
    require_orthanc()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lua_scripts = []
    if token:
        script = workdir / "bearer-filter.lua"
        script.write_text(BEARER_FILTER_LUA.replace("{token}", token))
        lua_scripts.append(str(script))
    users = {user: password} if user else None
    failure = ""
    for _ in range(attempts):
        http_port, dicom_port = free_port(), free_port()
        config = orthanc_config(workdir, http_port, dicom_port, users, lua_scripts)
        config_path = workdir / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        log = open(workdir / "orthanc.log", "w")  # noqa: SIM115 -- closed in OrthancServer.wait_stopped
        started = time.perf_counter()
        process = subprocess.Popen(
            [ORTHANC_BINARY, str(config_path)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT
        )
        server = OrthancServer(process, workdir, http_port, dicom_port, user, password, token, _log=log)
        system = _wait_until_up(server, timeout_s)
        if system is not None:
            server.startup_s = time.perf_counter() - started
            server.version = str(system.get("Version", ""))
            return server
        failure = server.log_tail()
        server.stop()
        if "already in use" not in failure:
            break
    raise RuntimeError(f"Orthanc did not start in {workdir} (binary {ORTHANC_BINARY}); its log ends:\n{failure}")


class OrthancLauncher:
    """Starts each flavour once, stops them all together (each stop takes seconds, so not one by one)."""

    def __init__(self, root: Path):
        self.root = root
        self.servers: dict[str, OrthancServer] = {}

    def get(self, flavour: str) -> OrthancServer:
        if flavour not in self.servers:
            settings = {
                "basic": {"user": TEST_USER, "password": TEST_PASSWORD},
                "bearer": {"token": TEST_TOKEN},
            }
            self.servers[flavour] = start_orthanc(self.root / flavour, **settings[flavour])
        return self.servers[flavour]

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.terminate()
        for server in self.servers.values():
            server.wait_stopped()
        self.servers.clear()


# one launcher per test session, so that importing a single fixture elsewhere is enough
_launcher: OrthancLauncher | None = None


def _session_server(tmp_path_factory, flavour: str):
    global _launcher
    if _launcher is None:
        _launcher = OrthancLauncher(tmp_path_factory.mktemp("orthanc"))
    launcher = _launcher
    yield launcher.get(flavour)
    # session teardown: the first fixture torn down stops every server at once
    launcher.stop_all()
    _launcher = None


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory) -> OrthancServer:
    """A real Orthanc on 127.0.0.1 with basic auth: ``.user``/``.password``, ``.dicomweb_url``."""
    yield from _session_server(tmp_path_factory, "basic")


@pytest.fixture(scope="session")
def orthanc_bearer_server(tmp_path_factory) -> OrthancServer:
    """A real Orthanc on 127.0.0.1 that admits only ``Authorization: Bearer <.token>`` (Lua filter)."""
    yield from _session_server(tmp_path_factory, "bearer")
