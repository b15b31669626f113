"""One signed-in user's browser annotator: ``python -m medannotassist_web.app --host H --port P --server URL``.

The launcher's contract: the user's token comes from the environment variable ``MEDANNOT_TOKEN`` (never the
command line, where other users' ``ps`` would see it); the app binds only ``--host``/``--port`` and, given the
launcher's ``MEDANNOT_SESSION_SECRET``, refuses every request and websocket without it in ``X-MedAnnot-Session``
(403: any local account can reach the port); once it serves the page (HTTP 200 on ``/``) it prints
``medannot-web ready http://HOST:PORT/``; SIGTERM (or Ctrl-C)
stops it cleanly: the case leaves the scene, the lease and the outbox are kept for the next sitting.
``--data-dir`` holds its work folder, outbox and image cache (a temporary folder by default). One process
serves one user: trame shares one state between all tabs of a process, so two users must never share one.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path

TOKEN_VARIABLE = "MEDANNOT_TOKEN"
SECRET_VARIABLE = "MEDANNOT_SESSION_SECRET"
SECRET_HEADER = "X-MedAnnot-Session"
READY = "medannot-web ready http://{host}:{port}/"


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="medannotassist_web.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="the address to bind (loopback by default)")
    parser.add_argument("--port", type=int, required=True, help="the port to bind")
    parser.add_argument("--server", required=True, help="the queue server's URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--data-dir", type=Path, help="work folder, outbox and image cache (default: a temp dir)")
    parser.add_argument("--settings", type=Path, help="a workstation settings JSON file (never holds the token)")
    parser.add_argument("--log-level", default="WARNING")
    return parser.parse_args(argv)


def load_settings(options):
    from MedAnnotAssistLib.workflow.settings import WorkstationSettings

    data = {}
    if options.settings is not None:
        try:
            data = json.loads(options.settings.read_text())
        except (OSError, ValueError) as error:
            raise SystemExit(f"medannot-web: --settings {options.settings}: {error}") from None
    try:
        settings = WorkstationSettings.from_json(data)
    except ValueError as error:
        raise SystemExit(f"medannot-web: --settings {options.settings}: {error}") from None
    settings.server_url = options.server
    return settings


def segment_of(session, structure_id: str | None) -> str | None:
    """The segment of a structure, or None (none selected, or a structure drawn otherwise than as a segment)."""
    from MedAnnotAssistLib.mrml.task_session import TaskSessionError

    try:
        return session.segmentId(structure_id) if structure_id else None
    except TaskSessionError:
        return None


def build(server, options, token: str):
    """The scene and views, the workstation on them, the page, the pump; the task model signs in."""
    from trame_slicer import module as trame_slicer_module

    from MedAnnotAssistLib.core.image_cache import ImageCache
    from MedAnnotAssistLib.core.outbox import Outbox
    from MedAnnotAssistLib.workflow.workstation import Workstation

    from .binding import Pump
    from .ui import Page
    from .views import Views

    server.enable_module(trame_slicer_module)
    data_dir = options.data_dir
    views = Views(server)
    settings = load_settings(options)
    desk = Workstation(
        views.context,
        settings,
        work_dir=data_dir / "work",
        outbox=Outbox(data_dir / "outbox", backoff_s=min(5.0, settings.sync_interval_s)),
        cache=ImageCache(data_dir / "cache"),
    )

    def on_event(model: str, event) -> None:
        """The scene follows the models, as the Slicer module's Segment Editor section does."""
        if model == "task" and event.name == "session":
            session = event["session"]
            if session is None:
                views.clear()
            else:
                segment = segment_of(session, desk.protocol.state.selected)
                views.show(session.segmentationNode, session.volumeNode, segment)
        elif model == "protocol" and event.name == "selected" and desk.protocol.session is not None:
            session = desk.protocol.session
            views.show(session.segmentationNode, session.volumeNode, event["segment_id"])
        elif model == "review" and event.name == "selected" and desk.review.review is not None:
            node = views.context.scene.GetNodeByID(event["segmentation_node_id"])
            views.show(node, desk.review.review.imageNode, event["segment_id"])
        elif model == "review" and event.name == "loaded" and desk.review.review is not None:
            review = desk.review.review
            views.show(review.consensusNode, review.imageNode)
        elif model == "review" and event.name == "closed" and desk.task.session is None:
            views.clear()

    pump = Pump(server, desk, on_event)
    views.editor.active_segment_id_changed.connect(
        lambda segment_id: desk.protocol.select_segment(segment_id) if desk.protocol.session else None
    )
    page = Page(server, desk, views, pump)
    views.set_layout("Axial Primary")
    desk.task.connect(token)
    return desk, pump, page


def cannot_listen(options, error: OSError) -> int:
    print(f"medannot-web: cannot listen on {options.host}:{options.port}: {os.strerror(error.errno)}", file=sys.stderr)
    return 1


def refuse_without(secret: str):
    """An aiohttp middleware: 403 to any request (websocket upgrades included) whose ``SECRET_HEADER`` is not
    ``secret``, compared in constant time."""
    from aiohttp import web

    expected = secret.encode()

    @web.middleware
    async def session_secret(request, handler):
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            return web.Response(status=403, text="this annotator session is reached only through its launcher")
        return await handler(request)

    return session_secret


def main(argv=None) -> int:
    options = parse(argv)
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        print(
            f"medannot-web: set {TOKEN_VARIABLE} to the user's token (it is never read from the command line)",
            file=sys.stderr,
        )
        return 2
    secret = os.environ.pop(SECRET_VARIABLE, "").strip()  # nothing this app starts needs it
    if not secret:
        print(
            f"medannot-web: no {SECRET_VARIABLE}: this port is unauthenticated (any local account can act as this "
            "user); run it alone for development only",
            file=sys.stderr,
            flush=True,
        )
    try:  # a taken port is told at once, before the scene is built
        with socket.create_server((options.host, options.port)):
            pass
    except OSError as error:
        return cannot_listen(options, error)
    if options.data_dir is None:
        options.data_dir = Path(tempfile.mkdtemp(prefix="medannot-web-"))
    options.data_dir.mkdir(parents=True, exist_ok=True)

    from trame.app import get_server

    server = get_server("medannot-web", client_type="vue3")
    known = server.cli.parse_known_args
    server.cli.parse_known_args = lambda *_a, **_k: known([])  # trame's defaults: our options are parsed above
    desk, pump, _page = build(server, options, token)
    os.environ.pop(TOKEN_VARIABLE, None)  # the task model's client holds it now; child processes need not

    @server.controller.on_server_bind.add
    def answer_the_root(wslink_server):
        """``/`` answers the page itself (200), not wslink's redirect: the launcher's readiness probe."""
        from aiohttp import web

        static = wslink_server.config.get("static", {})
        www = next(Path(path) for route, path in static.items() if route.strip("/") == "")

        async def index(_request):
            return web.FileResponse(www / "index.html")

        # wslink registers its redirect of / when it starts: ours replaces it
        defaults = getattr(wslink_server, "_default_routes", [])
        wslink_server._default_routes = [r for r in defaults if getattr(r, "path", None) != "/"]
        wslink_server.app.router.add_get("/", index)
        if secret:  # the app is not started yet: its middlewares can still grow
            wslink_server.app.middlewares.append(refuse_without(secret))

    @server.controller.on_server_ready.add
    def ready(**_):
        pump.start()
        print(READY.format(host=options.host, port=options.port), flush=True)

    try:
        server.start(
            host=options.host,
            port=options.port,
            open_browser=False,
            show_connection_info=False,
            disable_logging=True,
            timeout=0,
        )  # the launcher reaps idle sessions, not trame
    except OSError as error:  # the port is taken: the launcher picks another
        return cannot_listen(options, error)
    finally:
        pump.stop()
        desk.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
