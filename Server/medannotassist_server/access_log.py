"""uvicorn's logging with secrets removed: a token sent in a URL's query string (the API never reads one
there, but a client may still send it) is redacted from the access log and every other uvicorn line."""

from __future__ import annotations

import copy
import logging
import re

REDACTED = "[redacted]"
_SECRET_PARAMETER = re.compile(
    r"(?i)((?:^|[?&;])(?:access_token|token|api_key|apikey|key|auth|authorization|bearer|password|secret)=)[^&;#\s]*"
)
_TOKEN = re.compile(r"mat_[A-Za-z0-9_\-%]{8,}")  # our tokens (auth.TOKEN_PREFIX), wherever they appear


def redact(text: str) -> str:
    return _TOKEN.sub(f"mat_{REDACTED}", _SECRET_PARAMETER.sub(rf"\1{REDACTED}", text))


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = redact(record.msg)
        return True


def uvicorn_log_config() -> dict:
    """uvicorn's own logging configuration with the filter on both of its handlers (worker processes
    build it from this dict too)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": f"{__name__}.RedactTokens"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    return config
