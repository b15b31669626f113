"""The busiest endpoints' requests and answers without FastAPI's body machinery and its thread-pool hops:
the JSON body validated from its bytes by pydantic-core, the answer serialized by pydantic-core. Errors
are the ones FastAPI gives (``RequestValidationError`` with ``body`` locations, rendered by ``errors``)."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.requests import Request
from starlette.responses import Response

from .auth import _bearer, token_hash


def bearer_hash(request: Request) -> str:
    """The SHA-256 of the request's token (401 ``unauthorized`` when there is none)."""
    return token_hash(_bearer(request))


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def json_body(request: Request, model: type[BaseModel], required: bool):
    """(the body as ``model`` or None when absent and optional, the request error or None)."""
    body = await request.body()
    if not body or (not required and body.strip() == b"null"):
        if required:
            return None, RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
        return None, None
    content_type = request.headers.get("content-type")
    if content_type is not None and not _is_json(content_type):
        message = "Input should be a valid dictionary or object to extract fields from"
        return None, RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "msg": message}])
    try:
        return model.model_validate_json(body), None
    except ValidationError as error:
        problems = [{**item, "loc": ("body", *item["loc"])} for item in error.errors(include_url=False)]
        return None, RequestValidationError(problems)


def json_response(value, status_code: int = 200) -> Response:
    return Response(to_json(value), status_code=status_code, media_type="application/json")


def body_schema(model: type[BaseModel], required: bool) -> dict:
    """The OpenAPI ``requestBody`` and security of a hot endpoint (it declares neither as a parameter)."""
    schema = model.model_json_schema()
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}},
        "security": [{"HTTPBearer": []}],
    }
