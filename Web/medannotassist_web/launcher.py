"""The front address of the browser annotator: one loopback address where users sign in with their token, each
signed-in user getting an app process of their own.

A trame server holds one state for all its browser tabs, so two users in one process would see each other's case.
So the launcher starts one app process per user (on the first sign-in; the same user signing in again, from
another tab or browser, gets the same one), passes HTTP and WebSocket requests to it by a random session cookie
(HttpOnly, SameSite=Strict), stops it on sign-out or after ``idle_timeout_s`` without a request or message, and
starts at most ``max_sessions``. A request with no cookie, or one it does not know, gets the sign-in page.

``python -m medannotassist_web.launcher --server URL --data-dir DIR`` runs it alone; ``medannot run`` runs it with
a queue server and a demo project.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import secrets
import shlex
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from . import front, proxy
from .sessions import AppProcess, AppStartError

COOKIE = "medannot_session"
APP_COMMAND = (sys.executable, "-m", "medannotassist_web.app")
LAUNCHER_READY = "medannot-launcher ready "


class HostRefusedError(ValueError):
    pass


class TokenRefusedError(Exception):
    pass


def check_loopback(host: str) -> None:
    """The launcher speaks plain HTTP and carries tokens: it binds loopback only."""
    if host.strip().lower() == "localhost":
        return
    try:
        if ipaddress.ip_address(host.strip().strip("[]")).is_loopback:
            return
    except ValueError:
        pass
    raise HostRefusedError(
        f"--host {host} is not a loopback address: the launcher speaks plain HTTP, so tokens and images would cross "
        "the network in clear. Bind 127.0.0.1 and put a TLS-terminating reverse proxy in front for remote users"
    )


@dataclass
class UserSession:
    user_id: int
    user_name: str
    app: AppProcess
    cookies: set[str] = field(default_factory=set)
    sockets: set = field(default_factory=set)  # the app's side of its open websockets
    last_active: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last_active = time.monotonic()


class Launcher:
    def __init__(
        self,
        server_url: str,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        app_command: tuple[str, ...] | list[str] = APP_COMMAND,
        max_sessions: int = 8,
        idle_timeout_s: float = 1800.0,
        start_timeout_s: float = 180.0,
    ):
        check_loopback(host)
        if max_sessions < 1:
            raise ValueError(f"--max-sessions {max_sessions}: expected at least 1")
        if idle_timeout_s <= 0:
            raise ValueError(f"--idle-timeout-s {idle_timeout_s}: expected more than 0")
        self.server_url, self.data_dir = server_url.rstrip("/"), Path(data_dir)
        self.host, self.port, self.app_command = host, port, list(app_command)
        self.max_sessions, self.idle_timeout_s, self.start_timeout_s = max_sessions, idle_timeout_s, start_timeout_s
        self.sessions: dict[int, UserSession] = {}  # by user id
        self.cookies: dict[str, UserSession] = {}
        self._client: aiohttp.ClientSession | None = None
        self._reaper: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    # --- the web application -------------------------------------------------------------------------------

    def web_app(self) -> web.Application:
        # only the sign-in form is read whole; what is passed to an app is streamed, whatever its size
        app = web.Application(client_max_size=1 << 16)
        app.router.add_post(front.SIGN_IN, self.sign_in)
        app.router.add_route("*", front.SIGN_OUT, self.sign_out)
        app.router.add_get(f"{front.PREFIX}/health", self.health)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_startup.append(self._started)
        app.on_shutdown.append(self._shutting_down)
        return app

    async def _started(self, _app) -> None:
        self._client = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)
        )
        self._reaper = asyncio.ensure_future(self._reap_forever())

    async def _shutting_down(self, _app) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every app process (in parallel) and the reaper."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.gather(*(self._end(session) for session in list(self.sessions.values())))
        if self._client is not None:
            await self._client.close()

    # --- requests ------------------------------------------------------------------------------------------

    def _session_of(self, request: web.Request) -> UserSession | None:
        session = self.cookies.get(request.cookies.get(COOKIE, ""))
        return session if session is not None and session.app.alive else None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        session = self._session_of(request)
        if session is None:
            note = "Your session has ended (signed out, unused for a while, or stopped): sign in again."
            known = COOKIE in request.cookies
            if proxy.is_websocket(request) or request.method not in ("GET", "HEAD"):
                return web.Response(status=401, text="sign in first: " + self.address)
            return front.sign_in_page(self.server_url, note=note if known else "", status=200)
        session.touch()
        if proxy.is_websocket(request):
            return await proxy.forward_websocket(
                request, session.app.url, session.app.secret, self._client, COOKIE, session.touch, session.sockets
            )
        return await proxy.forward_http(request, session.app.url, session.app.secret, self._client, COOKIE)

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        if not self._same_origin(request):
            return front.refused_page("a sign-in must come from this page's own form (the Origin header differs)")
        form = await request.post()
        token = str(form.get("token", "")).strip()
        if not token:
            return front.sign_in_page(self.server_url, error="Enter your access token.", status=400)
        try:
            me = await self._who_is(token)
        except TokenRefusedError as error:
            return front.sign_in_page(self.server_url, error=str(error), status=401)
        except (aiohttp.ClientError, TimeoutError) as error:
            what = (
                f"could not check the token (HTTP {error.status})"
                if isinstance(error, aiohttp.ClientResponseError)
                else f"does not answer ({type(error).__name__})"
            )
            detail = f"The task-queue server at {self.server_url} {what}: try later."
            return front.sign_in_page(self.server_url, error=detail, status=502)
        try:
            session = await self._session_for(me, token)
        except TooManySessionsError:
            return front.too_many_sessions_page(self.server_url, self.max_sessions)
        except AppStartError as error:
            return front.start_failed_page(str(error))
        cookie = secrets.token_urlsafe(32)
        session.cookies.add(cookie)
        self.cookies[cookie] = session
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict", path="/")
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        if (session := self._session_of(request)) is not None:
            await self._end(session)
        response = web.HTTPSeeOther("/")
        response.del_cookie(COOKIE, path="/")
        return response

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "sessions": len(self.sessions),
                "max_sessions": self.max_sessions,
                "server": self.server_url,
            }
        )

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        return origin is None or origin == "null" or urlsplit(origin).netloc == request.host

    async def _who_is(self, token: str) -> dict:
        """The queue server's ``GET /api/v1/me`` for this token; TokenRefusedError when it refuses it."""
        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=15)
        async with self._client.get(f"{self.server_url}/api/v1/me", headers=headers, timeout=timeout) as answer:
            if answer.status in (401, 403):
                raise TokenRefusedError(
                    f"The task-queue server at {self.server_url} refused this token (mistyped, expired or revoked): "
                    "check it, or ask your coordinator for a new one."
                )
            answer.raise_for_status()
            return await answer.json()

    # --- sessions ------------------------------------------------------------------------------------------

    async def _session_for(self, me: dict, token: str) -> UserSession:
        """The user's session, its app started on the first sign-in; TooManySessionsError when all are taken."""
        async with self._lock:
            session = self.sessions.get(me["id"])
            if session is not None and not session.app.alive:
                self._forget(session)
                session = None
            if session is None:
                if len(self.sessions) >= self.max_sessions:
                    raise TooManySessionsError
                folder = self.data_dir / "users" / f"user-{me['id']}"
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                app = AppProcess(self.app_command, self.server_url, folder, token, self.start_timeout_s)
                session = self.sessions[me["id"]] = UserSession(me["id"], me["name"], app)
        session.touch()
        try:
            await session.app.ready()
        except AppStartError:
            async with self._lock:
                self._forget(session)
            raise
        return session

    def _forget(self, session: UserSession) -> None:
        if self.sessions.get(session.user_id) is session:
            del self.sessions[session.user_id]
        for cookie in session.cookies:
            self.cookies.pop(cookie, None)
        session.cookies.clear()

    async def _end(self, session: UserSession) -> None:
        """Close its websockets first (the app sees its browsers leave and need not wait for them), then stop it."""
        self._forget(session)
        await asyncio.gather(*(socket.close() for socket in list(session.sockets)), return_exceptions=True)
        await session.app.stop()

    async def reap(self) -> list[UserSession]:
        """Stop the sessions unused for ``idle_timeout_s`` and forget those whose app exited; those ended."""
        now = time.monotonic()
        ended = []
        for session in list(self.sessions.values()):
            exited = session.app.process is not None and session.app.process.returncode is not None
            idle = now - session.last_active > self.idle_timeout_s
            if exited or idle:
                ended.append(session)
        await asyncio.gather(*(self._end(session) for session in ended))
        return ended

    async def _reap_forever(self) -> None:
        interval = min(max(self.idle_timeout_s / 4, 0.2), 30.0)
        while True:
            await asyncio.sleep(interval)
            await self.reap()


class TooManySessionsError(Exception):
    pass


async def serve(launcher: Launcher, stop: asyncio.Event, announce: str | None = None) -> None:
    """Run ``launcher`` until ``stop`` is set, printing ``announce`` once it listens (default: its ready line);
    every app process is stopped before this returns."""
    runner = web.AppRunner(launcher.web_app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, launcher.host, launcher.port, reuse_address=True).start()
        print(announce or f"{LAUNCHER_READY}{launcher.address}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medannotassist_web.launcher", description="the browser annotator's front address"
    )
    parser.add_argument("--server", required=True, help="the task-queue server's URL (http://127.0.0.1:8000)")
    parser.add_argument("--data-dir", required=True, type=Path, help="where each user's app keeps its files")
    parser.add_argument("--host", default="127.0.0.1", help="loopback only (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="default 8080")
    parser.add_argument("--max-sessions", type=int, default=8, help="app processes at most (default 8)")
    parser.add_argument("--idle-timeout-s", type=float, default=1800.0, help="stop an unused session (default 1800)")
    parser.add_argument("--start-timeout-s", type=float, default=180.0, help="wait this long for an app (default 180)")
    parser.add_argument(
        "--app-command",
        help="the app started per user, before its options (default: python -m medannotassist_web.app)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.split(args.app_command) if args.app_command else APP_COMMAND
    try:
        launcher = Launcher(
            args.server, args.data_dir, host=args.host, port=args.port, app_command=command,
            max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout_s, start_timeout_s=args.start_timeout_s,
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(launcher, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
