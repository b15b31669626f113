"""`medannot run` (what `make run` runs): the whole product on this machine, on loopback only.

The sample scans (fetched once), a task-queue server on SQLite under DATA_DIR/demo/server, a demo project with the
sample CTs as cases pre-segmented by the CT engine, demo users, and the browser annotator's launcher; it prints the
addresses and tokens, then ``ready``. Ctrl-C or SIGTERM stops everything; a second run reuses the data.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .common import DEFAULT_DATA_DIR

HOST = "127.0.0.1"
READY = "ready"
# settings of the environment that would send the demo server elsewhere than its SQLite file on loopback
_SERVER_ENV = ("MEDANNOT_DATABASE_URL", "MEDANNOT_HOST", "MEDANNOT_ALLOW_REMOTE", "MEDANNOT_WORKERS", "MEDANNOT_PORT")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _stop_signal(signum, _frame):
    raise KeyboardInterrupt  # SIGTERM unwinds like Ctrl-C: every child is stopped on the way out


def _check_port(port: int, option: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            raise OSError(
                f"port {port} on {HOST} is in use (another `medannot run` or `medannot serve`?): stop it or pass "
                f"{option} with a free port"
            ) from None


class QueueServer:
    """``python -m medannotassist_server`` on loopback in its own process group, its output in ``log_path``."""

    def __init__(self, data_dir: Path, port: int, log_path: Path):
        self.data_dir, self.port, self.log_path = data_dir, port, log_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start_server(self, timeout_s: float = 120.0) -> None:
        import requests

        from medannotassist_web.sessions import _die_with_parent, tail

        env = {key: value for key, value in os.environ.items() if key not in _SERVER_ENV}
        command = [sys.executable, "-m", "medannotassist_server", "--data-dir", str(self.data_dir)]
        command += ["--host", HOST, "--port", str(self.port), "--log-level", "warning"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the task-queue server exited with status {self.process.returncode}; {self.log_path} ends "
                    f"with:\n{tail(self.log_path)}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"the task-queue server did not answer within {timeout_s:.0f} s; see {self.log_path}")

    def stop_server(self, grace_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _summary(launcher, server: QueueServer, study, data_dir: Path) -> str:
    from .demo_study import CASES, PROJECT, PROTOCOL, USERS

    lines = [
        "",
        "MedAnnotAssist runs on this machine (loopback only):",
        f"  browser annotator  {launcher.address}   (sign in with a token below; one session per user)",
        f"  task-queue server  {server.url}/   (API pages: {server.url}/docs)",
        f"  project            {PROJECT} (protocol {PROTOCOL}), {len(CASES)} cases pre-segmented by the CT engine",
        "  made this run      "
        + (", ".join(study.made) if study.made else "nothing: the data of the last run is reused"),
        f"tokens (kept in {data_dir / 'demo' / 'tokens.json'}, readable by you only):",
    ]
    for name, role in USERS.items():
        new = "  (new)" if name in study.renewed else ""
        lines.append(f"  {name:<11} {role or 'site admin':<10} {study.tokens[name]}{new}")
    lines += [
        "Desktop Slicer: in the MedAnnotAssist module's Task section, Server "
        f"{server.url} and a token above, then Connect.",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def _serve(launcher, summary: str) -> None:
    from medannotassist_web.launcher import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(launcher, stop, f"{summary}\n{READY}")


def cmd_run(args) -> int:
    from medannotassist_web.launcher import Launcher

    from ..core.sample_data import SampleDataError, fetch_sample_data
    from .demo_study import accounts, seed

    data_dir = Path(args.data_dir).resolve()
    demo = data_dir / "demo"
    _check_port(args.server_port, "--server-port")
    _check_port(args.port, "--port")
    launcher = Launcher(
        f"http://{HOST}:{args.server_port}", demo / "sessions", host=HOST, port=args.port,
        max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout_min * 60,
    )  # fmt: skip
    previous = signal.signal(signal.SIGTERM, _stop_signal)
    server = QueueServer(demo / "server", args.server_port, demo / "server.log")
    try:
        try:
            samples = fetch_sample_data(data_dir / "sample-data", log=_log)
        except SampleDataError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        demo.mkdir(parents=True, exist_ok=True, mode=0o700)
        (demo / "sessions").mkdir(exist_ok=True, mode=0o700)
        tokens, renewed = accounts(demo / "server", demo / "tokens.json")
        _log(f"starting the task-queue server on {server.url} (log: {server.log_path}) ...")
        server.start_server()
        study = seed(server.url, tokens, renewed, samples, demo / "ai", _log)
        asyncio.run(_serve(launcher, _summary(launcher, server, study, data_dir)))
    except KeyboardInterrupt:
        pass
    finally:
        _log("stopping ...")
        server.stop_server()
        signal.signal(signal.SIGTERM, previous)
    _log("stopped")
    return 0


def add_commands(commands) -> None:
    run = commands.add_parser(
        "run",
        help="the whole product on this machine: queue server, demo project and users, browser annotator (loopback)",
    )
    run.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, type=Path, help="sample scans in DATA_DIR/sample-data, the rest in "
        "DATA_DIR/demo (default var)"
    )  # fmt: skip
    run.add_argument("--port", type=int, default=8080, help="the browser annotator's port (default 8080)")
    run.add_argument("--server-port", type=int, default=8000, help="the task-queue server's port (default 8000)")
    run.add_argument("--max-sessions", type=int, default=4, help="browser sessions at most (default 4)")
    run.add_argument(
        "--idle-timeout-min", type=float, default=30.0, help="a browser session unused this long ends (default 30)"
    )
    run.set_defaults(func=cmd_run)
