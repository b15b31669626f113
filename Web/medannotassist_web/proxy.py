"""HTTP and WebSocket requests passed on to a user's app process, any path (trame's websocket has its own).

The launcher's session cookie is taken out of what the app receives: the app never sees it, so nothing in an app
can hand it on. The session's secret goes with every request instead (``X-MedAnnot-Session``, in place of any the
browser sent): the app's own port refuses anything without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from http.cookies import SimpleCookie

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from .sessions import SECRET_HEADER

# hop-by-hop headers (RFC 9110 7.6.1) and what the client library sets for the connection itself
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
WEBSOCKET_HANDSHAKE = {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}


def without_cookie(header: str | None, name: str) -> str | None:
    """A Cookie header less the cookie ``name``; None when nothing is left."""
    if not header:
        return None
    jar = SimpleCookie()
    with contextlib.suppress(Exception):
        jar.load(header)
    kept = [f"{key}={morsel.coded_value}" for key, morsel in jar.items() if key != name]
    return "; ".join(kept) or None


def _headers(request: web.Request, cookie_name: str, secret: str, skip: set[str] = frozenset()) -> dict[str, str]:
    headers = {}
    for key, value in request.headers.items():
        lower = key.lower()
        if lower in HOP_BY_HOP or lower in skip or lower in ("cookie", SECRET_HEADER.lower()):
            continue
        headers[key] = value
    if cookie := without_cookie(request.headers.get("Cookie"), cookie_name):
        headers["Cookie"] = cookie
    headers[SECRET_HEADER] = secret
    return headers


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


async def forward_http(request: web.Request, base: str, secret: str, client: aiohttp.ClientSession, cookie_name: str):
    """The request to ``base`` + the same path and query, with the session's ``secret``; the answer streamed back
    as it comes."""
    url = URL(base + request.raw_path, encoded=True)
    data = request.content if request.body_exists else None
    try:
        async with client.request(
            request.method, url, headers=_headers(request, cookie_name, secret), data=data, allow_redirects=False
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() == "location" and value.startswith(base):
                    value = value[len(base) :] or "/"  # a redirect to the app's own address stays behind the launcher
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(1 << 16):
                await response.write(chunk)
            await response.write_eof()
            return response
    except aiohttp.ClientConnectionError:
        return web.Response(status=502, text="the annotator session does not answer; reload to sign in again")


async def forward_websocket(
    request: web.Request,
    base: str,
    secret: str,
    client: aiohttp.ClientSession,
    cookie_name: str,
    active: Callable[[], None],
    open_sockets: set,
):
    """Open the same websocket on the app (with the session's ``secret``), then pass messages both ways until
    either side closes; ``active()`` on each message (the session is in use). The app's side is in
    ``open_sockets`` while open (so that ending a session closes it before stopping the app)."""
    protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    url = URL("ws" + base.removeprefix("http") + request.raw_path, encoded=True)
    headers = _headers(request, cookie_name, secret, WEBSOCKET_HANDSHAKE)
    try:
        upstream = await client.ws_connect(url, protocols=protocols, headers=headers, max_msg_size=0, autoping=True)
    except (aiohttp.ClientError, aiohttp.WSServerHandshakeError):
        return web.Response(status=502, text="the annotator session does not answer; reload to sign in again")
    downstream = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0)
    open_sockets.add(upstream)
    try:
        await downstream.prepare(request)

        async def pump(source, target) -> None:
            async for message in source:
                active()
                if message.type == WSMsgType.TEXT:
                    await target.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await target.send_bytes(message.data)
                else:  # closing or an error: end both sides
                    break

        pumps = [asyncio.ensure_future(pump(upstream, downstream)), asyncio.ensure_future(pump(downstream, upstream))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
    finally:
        open_sockets.discard(upstream)
        await upstream.close()
        await downstream.close()
    return downstream
