"""What an audit row's hash covers, shared by the write path (``audit``) and verification (``audit_verify``)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

GENESIS = "0" * 64


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def hashed_text(row) -> str:
    """What a row's hash covers (``row``: an AuditEvent or a namespace): its fields and the previous hash.
    A project chain's rows carry the project's id, so a row moved to another chain no longer matches."""
    fields = [
        row.seq,
        row.at,
        row.actor,
        row.action,
        row.entity,
        row.entity_id,
        row.project_id,
        row.before_json,
        row.after_json,
        row.prev_hash,
    ]
    return canonical(fields)


def unkeyed_row_hash(row) -> str:
    """SHA-256 of a row made before the chain was keyed (before revision 0004)."""
    return hashlib.sha256(hashed_text(row).encode("utf-8")).hexdigest()
