"""The queue client's errors: one class per thing a panel does differently.

Every error the server sends is JSON ``{"code", "message", ...details}`` (docs/queue-api.md#errors);
``error_from_answer`` turns it into the class below that matches its status and code, keeping the code, the
message and the details. No answer at all (refused, timed out, DNS) is ``Offline``.

What a caller does with each:

- ``Offline``, ``ServerError``: try again later (``retryable``); the outbox keeps the submission.
- ``AuthError``: ask for a new token; nothing else is wrong.
- ``TlsError``: the certificate could not be checked: give the CA bundle (never turn verification off).
- ``LeaseLost``: the task is no longer the caller's; keep the work, and offer a new claim.
- ``ProtocolRejected``: show ``failures``; the user corrects or gives an override reason per structure.
- ``Blinded``: the case's other readers' work stays hidden until approval (not an error to report).
"""

from __future__ import annotations

from dataclasses import dataclass


class QueueError(Exception):
    """A refusal or failure of a queue call. ``status`` is the HTTP status (None without an answer), ``code``
    the server's stable code, ``details`` the rest of its JSON body, ``url`` the request's URL (no token)."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, code: str = "", url: str = "", details=None):
        super().__init__(message)
        self.message, self.status, self.code, self.url = message, status, code, url
        self.details: dict = dict(details or {})

    def to_dict(self) -> dict:
        """What the outbox keeps of a refusal, to show it again later."""
        return {"status": self.status, "code": self.code, "message": self.message, **self.details}


class Offline(QueueError):
    """No answer from the server: connection refused, host unknown, timed out, connection dropped."""

    retryable = True


class TlsError(QueueError):
    """The server's TLS certificate could not be verified (or TLS failed): a setting to fix, not a network
    outage. Give the CA bundle that signed it (``ca_bundle``)."""


class ServerError(QueueError):
    """5xx: the server failed (``internal_error``) or is busy (``database_unavailable``); retry later.
    ``retry_after`` is the server's Retry-After in seconds, when it sent one."""

    retryable = True

    @property
    def retry_after(self) -> float | None:
        return self.details.get("retry_after")


class CorruptDownload(QueueError):
    """A downloaded file's SHA-256 is not the one the server lists for it (a proxy or the disk changed it)."""

    retryable = True


class ConsensusFailed(QueueError):
    """The case's consensus job failed for good (``details["job"]`` holds its reason); an admin queues it
    again (``POST …/cases/{cid}/consensus``)."""


class AuthError(QueueError):
    """401: no token, or an invalid, revoked or expired one."""


class Forbidden(QueueError):
    """403: the caller's roles do not allow it."""


class Blinded(Forbidden):
    """403 ``blinded``: the consensus or final of a case the caller reads, before its approval."""


class ReaderCannotReview(Forbidden):
    """403 ``reader_cannot_review``: a reviewer deciding a case they read."""


class NotFound(QueueError):
    """404 ``*_not_found``: no such project, case, task, submission ... or one the caller may not see."""


class Conflict(QueueError):
    """409: the request does not fit the task's or case's state (``wrong_task_kind``, ``case_state``, ...)."""


class LeaseLost(Conflict):
    """409 ``lease_lost``: the lease expired and someone else claimed the task, or it was released, or the task
    is closed. The work is kept by whoever holds it (the outbox, the panel); ``task_state`` says where the
    task is now (``queued``: free again; ``leased``: someone else holds it; ``submitted``: closed).

    ``task_id``, ``project_id`` and ``case_id`` are filled in by the client call that met it (``case_id``
    when the caller knew it), so a panel can offer a new claim of the case: ``QueueClient.claim_again``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.project_id: int | None = None
        self.task_id: int | None = None
        self.case_id: int | None = None

    @property
    def task_state(self) -> str | None:
        return self.details.get("task_state")

    @property
    def task_free(self) -> bool | None:
        """True when the task is back in the queue (released); False when someone else holds it or it is
        closed; None when the server did not say."""
        state = self.task_state
        return None if state is None else state == "queued"


class LeaseMismatch(Conflict):
    """409 ``lease_mismatch``: the caller holds the task under another lease id (``my_tasks`` lists it)."""


class AlreadySubmitted(Conflict):
    """409 ``already_submitted``: a second submit on one lease without an Idempotency-Key."""


class IdempotencyKeyReused(Conflict):
    """409 ``idempotency_key_reused``: the key was used before for another file, metadata or task."""


class Rejected(QueueError):
    """4xx: the request's content was refused (bad file, metadata, geometry, too large, ...); ``details``
    holds what the server listed (``problems``, ``segments``, ``limit_bytes``, ...)."""


@dataclass(frozen=True)
class RuleFailure:
    """One blocking rule of the protocol that the segmentation fails (docs/queue-api.md#submissions)."""

    structure: str
    name: str
    rule: str
    measured: object
    expected: str
    message: str


class ProtocolRejected(Rejected):
    """422 ``protocol_rules_failed``: blocking rules failed without an override; ``failures`` lists them.
    Correct the segmentation, or resend with ``{"structure", "rule"?, "reason"}`` in ``metadata.overrides``."""

    @property
    def failures(self) -> list[RuleFailure]:
        return [
            RuleFailure(
                str(item.get("structure", "")),
                str(item.get("name", "")),
                str(item.get("rule", "")),
                item.get("measured"),
                str(item.get("expected", "")),
                str(item.get("message", "")),
            )
            for item in self.details.get("failures", [])
            if isinstance(item, dict)
        ]


BY_CODE: dict[str, type[QueueError]] = {
    "blinded": Blinded,
    "reader_cannot_review": ReaderCannotReview,
    "lease_lost": LeaseLost,
    "lease_mismatch": LeaseMismatch,
    "already_submitted": AlreadySubmitted,
    "idempotency_key_reused": IdempotencyKeyReused,
    "protocol_rules_failed": ProtocolRejected,
}
BY_STATUS: dict[int, type[QueueError]] = {401: AuthError, 403: Forbidden, 404: NotFound, 409: Conflict}


def error_from_answer(status: int, body, url: str, retry_after: str | None = None) -> QueueError:
    """The typed error for an HTTP error answer. ``body``: its parsed JSON (anything else when it was not
    JSON, e.g. a proxy's HTML page)."""
    if not isinstance(body, dict) or not isinstance(body.get("code"), str):
        body = {"code": f"http_{status}", "message": f"HTTP {status} with a body that is not the queue's JSON"}
    details = {key: value for key, value in body.items() if key not in ("code", "message")}
    if retry_after is not None and retry_after.strip().isdigit():  # an HTTP date: the client's own backoff
        details["retry_after"] = float(retry_after)
    code, message = body["code"], str(body.get("message", "")) or body["code"]
    kind = ServerError if status >= 500 else BY_CODE.get(code) or BY_STATUS.get(status) or Rejected
    return kind(message, status=status, code=code, url=url, details=details)
