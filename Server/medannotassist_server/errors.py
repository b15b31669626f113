"""Every error is JSON ``{"code": ..., "message": ..., ...}`` with a stable code; internals never leak."""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("medannotassist_server")

# The stable codes for Starlette's own errors (unknown route, wrong method, ...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "upload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(
            {"code": self.code, "message": self.message, **self.details}, status_code=self.status, headers=headers
        )


def not_found(what: str, ident) -> ApiError:
    return ApiError(404, f"{what}_not_found", f"no {what.replace('_', ' ')} {ident} (or it is not visible to you)")


def _validation_errors(exc: RequestValidationError) -> list[dict]:
    # only location, message and type: the input may be a file or bytes, and must not be echoed
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": error.get("type"),
        }
        for error in exc.errors()
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 400 and exc.__cause__ is not None:
            message = "the request body could not be parsed (malformed multipart or form data)"
            code = "malformed_body"
        return JSONResponse({"code": code, "message": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        errors = _validation_errors(exc)
        if any(error["type"] == "json_invalid" for error in errors):
            return JSONResponse(
                {"code": "malformed_json", "message": "the request body is not valid JSON", "errors": errors},
                status_code=400,
            )
        where = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors[:5])
        return JSONResponse(
            {"code": "invalid_request", "message": f"invalid request: {where}", "errors": errors}, status_code=422
        )

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError):
        log.info("database refused a value: %s", type(exc.orig).__name__)
        return JSONResponse(
            {"code": "invalid_value", "message": "a value in the request cannot be stored (out of range or invalid)"},
            status_code=422,
        )

    @app.exception_handler(UnicodeEncodeError)
    async def _unicode_error(_request: Request, _exc: UnicodeEncodeError):
        return JSONResponse(
            {"code": "invalid_value", "message": "a text value in the request is not valid Unicode"}, status_code=422
        )

    @app.exception_handler(OperationalError)
    async def _database_unavailable(_request: Request, exc: OperationalError):
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return JSONResponse(
            {"code": "database_unavailable", "message": "the database is busy or unavailable; retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, exc: Exception):
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s", incident, exc_info=exc)
        return JSONResponse(
            {"code": "internal_error", "message": f"internal error (incident {incident}; see the server log)"},
            status_code=500,
        )


class UploadLimit:
    """ASGI middleware: a request body larger than the limit is answered 413 with a JSON error, from its
    Content-Length when it has one, else as soon as the streamed bytes pass the limit."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        received, exceeded, started = 0, False, False

        async def counting_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    raise _BodyTooLargeError()
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded and not started:
                return  # the app's own answer to the cut body is replaced by the 413 below
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLargeError:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send, received)

    async def _refuse(self, send, size: int):
        body = json.dumps(
            {
                "code": "upload_too_large",
                "message": f"the request body ({size} bytes or more) exceeds the limit of {self.limit} bytes",
                "limit_bytes": self.limit,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLargeError(Exception):
    pass
