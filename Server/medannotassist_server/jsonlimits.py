"""Bounded JSON: nesting depth and size are checked on the raw text, without recursion, before any parser
(Python's ``json`` recurses once per level: 5,000 levels raise RecursionError, deeper ones can overflow the
stack), and strings must be valid Unicode (a lone surrogate escape such as ``"\\ud800"`` parses, and fails
later, when the text is encoded for the database or a hash).

``JsonBodyLimits`` applies this to every JSON request body; ``parse_json_text`` to a JSON form field.
"""

from __future__ import annotations

import json
import re

from .errors import ApiError

MAX_JSON_DEPTH = 64
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
NOT_UNICODE = "text is not valid Unicode (a lone surrogate escape such as \\ud800)"


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays and objects nest more than ``limit`` deep (brackets inside strings do not count)."""
    outside = _STRING.sub("", text).split('"', 1)[0]  # an unterminated string: the parser will refuse it
    depth = 0
    for match in _BRACKET.finditer(outside):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def lone_surrogate_path(value, where: str) -> str | None:
    """The JSON path of the first string (key or value) holding a lone surrogate, or None; no recursion."""
    pending = [(value, where)]
    while pending:
        item, path = pending.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not _valid_text(key):
                    return f"{path} (a key)"
                pending.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
        elif isinstance(item, str) and not _valid_text(item):
            return path
    return None


def _valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def too_large(size: int, where: str, max_bytes: int) -> ApiError:
    message = f"{where}: {size} bytes of JSON or more, over the limit of {max_bytes}"
    return ApiError(422, "json_too_large", message, limit_bytes=max_bytes)


def check_limits(text: str, where: str, max_bytes: int) -> None:
    """422 ``json_too_large`` or ``json_too_deep`` (more than ``MAX_JSON_DEPTH`` levels) naming ``where``."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise too_large(size, where, max_bytes)
    if too_deep(text):
        message = f"{where}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        raise ApiError(422, "json_too_deep", message, limit_depth=MAX_JSON_DEPTH)


def parse_json_text(text: str, where: str, code: str, max_bytes: int):
    """Parse a JSON document within the limits; NaN, Infinity and lone surrogates are refused (422 ``code``)."""
    check_limits(text, where, max_bytes)
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise ApiError(422, code, f"{where}: not valid JSON: {error}") from None
    bad = lone_surrogate_path(data, where) if _SURROGATE_ESCAPE.search(text) else None
    if bad:
        raise ApiError(422, code, f"{bad}: {NOT_UNICODE}")
    return data


def _is_json(headers: dict[bytes, bytes]) -> bool:
    """What FastAPI parses as JSON: no content type, application/json or application/*+json."""
    content_type = headers.get(b"content-type")
    if content_type is None:
        return True
    kind = content_type.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))


class JsonBodyLimits:
    """ASGI middleware: a JSON request body over the size or depth limit, or holding a lone surrogate,
    gets 422 before any parser sees it; other bodies pass untouched."""

    def __init__(self, app, max_bytes: int = MAX_JSON_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        if not _is_json(dict(scope.get("headers") or [])):
            return await self.app(scope, receive, send)
        chunks, size, more, first = [], 0, True, None
        while more:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # a disconnect: the app sees it
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_bytes:
                return await _answer(too_large(size, "request body", self.max_bytes), scope, receive, send)
        body = b"".join(chunks)
        try:
            text = body.decode("utf-8", "replace")
            check_limits(text, "request body", self.max_bytes)
            if _SURROGATE_ESCAPE.search(text):
                _check_text(body)
        except ApiError as error:
            return await _answer(error, scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return first or {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _check_text(body: bytes) -> None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return  # malformed: FastAPI answers malformed_json
    bad = lone_surrogate_path(data, "body")
    if bad:
        raise ApiError(422, "invalid_value", f"{bad}: {NOT_UNICODE}")


async def _answer(error: ApiError, scope, receive, send) -> None:
    await error.response()(scope, receive, send)
