"""One signed-in user's app process: started with the user's token in its environment, ready when it says so and
answers on ``/``, stopped with its whole process group.

The app contract: ``APP_COMMAND --host 127.0.0.1 --port PORT --server QUEUE_URL --data-dir DIR`` with the token in
``MEDANNOT_TOKEN`` and a random secret of this session in ``MEDANNOT_SESSION_SECRET`` (never on a command line,
where any local user could read them); the app prints ``medannot-web ready http://HOST:PORT/`` on stdout, answers
200 on ``/`` to a request carrying the secret in ``X-MedAnnot-Session`` (a redirect is taken too: trame's own index
redirects), refuses every request and websocket without it (403: other local users reach its port too) and exits
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp

READY_LINE = "medannot-web ready "
TOKEN_VARIABLE = "MEDANNOT_TOKEN"
SECRET_VARIABLE = "MEDANNOT_SESSION_SECRET"
SECRET_HEADER = "X-MedAnnot-Session"
LOOPBACK = "127.0.0.1"


class AppStartError(RuntimeError):
    """The app exited, or did not become ready in time; the message ends with the last lines of its log."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, even by SIGKILL (Linux), so no app outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class AppProcess:
    """The app of one user; ``ready()`` starts it once and waits until it answers (shared by concurrent callers)."""

    def __init__(
        self,
        command: Sequence[str],
        server_url: str,
        folder: Path,
        token: str,
        start_timeout_s: float = 180.0,
        stop_grace_s: float = 10.0,
    ):
        self.command, self.server_url, self.folder = list(command), server_url, Path(folder)
        self.start_timeout_s, self.stop_grace_s = start_timeout_s, stop_grace_s
        self._token = token
        self.secret = secrets.token_urlsafe(32)  # what the app's port asks of every request (the proxy adds it)
        self.port: int | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.log_path = self.folder / "app.log"
        self._ready: asyncio.Task | None = None
        self._pump: asyncio.Task | None = None
        self._announced = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        """Started (or starting) and not exited."""
        return self._ready is not None and (self.process is None or self.process.returncode is None)

    async def ready(self) -> None:
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start())
        await asyncio.shield(self._ready)

    async def _start(self) -> None:
        app_dir = self.folder / "app"
        app_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.port = free_port()
        argv = [*self.command, "--host", LOOPBACK, "--port", str(self.port), "--server", self.server_url]
        argv += ["--data-dir", str(app_dir)]
        env = {key: value for key, value in os.environ.items() if key not in (TOKEN_VARIABLE, SECRET_VARIABLE)}
        env |= {TOKEN_VARIABLE: self._token, SECRET_VARIABLE: self.secret}
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it as its stderr)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # its own process group: stopping it stops whatever it started
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        self._pump = asyncio.ensure_future(self._copy_stdout())
        try:
            await asyncio.wait_for(self._wait_until_answering(), self.start_timeout_s)
        except TimeoutError:
            await self.stop()
            raise AppStartError(
                f"the annotator app did not become ready within {self.start_timeout_s:.0f} s; "
                f"its log ({self.log_path}) ends with:\n{tail(self.log_path)}"
            ) from None
        except AppStartError:
            await self.stop()
            raise

    async def _copy_stdout(self) -> None:
        """The app's stdout into its log (a full pipe would block it), watching for the ready line."""
        with open(self.log_path, "ab") as log:
            while line := await self.process.stdout.readline():
                log.write(line)
                log.flush()
                if line.decode(errors="replace").startswith(READY_LINE):
                    self._announced.set()

    async def _wait_until_answering(self) -> None:
        exited = asyncio.ensure_future(self.process.wait())
        announced = asyncio.ensure_future(self._announced.wait())
        try:
            await asyncio.wait({exited, announced}, return_when=asyncio.FIRST_COMPLETED)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
                while not exited.done():
                    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                        secret = {SECRET_HEADER: self.secret}
                        async with client.get(self.url + "/", headers=secret, allow_redirects=False) as answer:
                            if (
                                answer.status < 400 and announced.done()
                            ):  # trame answers / with a redirect to index.html
                                return
                    await asyncio.wait({exited}, timeout=0.2)
        finally:
            announced.cancel()
        await self._pump  # the whole log, for the message
        raise AppStartError(
            f"the annotator app exited with status {self.process.returncode} before it was ready; "
            f"its log ({self.log_path}) ends with:\n{tail(self.log_path)}"
        )

    async def stop(self) -> None:
        """SIGTERM to the app's process group, SIGKILL after the grace period; returns once it has exited."""
        if self.process is None:
            if self._ready is not None and not self._ready.done():
                self._ready.cancel()
            return
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), self.stop_grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await self.process.wait()
        # anything the app left in its group goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._pump, 5)
