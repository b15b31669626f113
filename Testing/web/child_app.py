"""A test double of the browser annotator app (``medannotassist_web.app``) for the launcher's process tests.

It keeps the app's contract and nothing else: the same options, the token from ``MEDANNOT_TOKEN``, the ready line
on stdout, 200 on ``/``, exit on SIGTERM. It answers who it is: ``/whoami`` (its pid, the user the queue server
says the token belongs to, and the cookies and headers it received) and a websocket at ``/ws`` that echoes each
message prefixed with its user's name. ``--fail`` exits before ready (an app that cannot start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import urllib.request
from pathlib import Path

from aiohttp import WSMsgType, web


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server", required=True)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    if args.fail:
        print("test double: told to fail before ready", file=sys.stderr)
        return 3
    token = os.environ["MEDANNOT_TOKEN"]
    request = urllib.request.Request(f"{args.server}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        user = json.load(answer)["name"]
    (args.data_dir / "started").write_text(json.dumps({"pid": os.getpid(), "user": user}))

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=f"<html><body><h1 id='user'>test double of {user}</h1></body></html>",
                            content_type="text/html")  # fmt: skip

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(
            {"pid": os.getpid(), "user": user, "cookies": dict(request.cookies), "headers": dict(request.headers)}
        )

    async def jump(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://{args.host}:{args.port}/whoami")  # an absolute redirect to its own address

    async def echo(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                await socket.send_str(f"{user}: {message.data}")
        return socket

    async def run() -> None:
        app = web.Application()
        app.router.add_get("/", index)
        app.router.add_route("*", "/whoami", whoami)
        app.router.add_get("/ws", echo)
        app.router.add_get("/jump", jump)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"medannot-web ready http://{args.host}:{args.port}/", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
