"""The task-queue client: one ``QueueClient`` per server and token, every call a reading study makes.

Synchronous and thread-agnostic: a panel runs its calls through ``core/jobs.py`` (never on Slicer's GUI
thread). Errors are the typed ones of ``queue_errors`` (``Offline``, ``AuthError``, ``LeaseLost``,
``Blinded``, ``ProtocolRejected`` ...). See docs/queue-client.md; the server's contract is docs/queue-api.md.

Retries (with exponential backoff, honouring the server's Retry-After) happen only where repeating the call
cannot do anything twice: every GET, heartbeat (it only moves the expiry), release (a retry that finds the
lease already gone means the first attempt went through: the task is no longer the caller's either way) and
a submission sent with an Idempotency-Key (the server answers a repeat with the first answer). A claim, a
review decision and the edited final are sent once: after ``Offline`` on a claim, ``my_tasks`` shows
whether the claim went through (``next_task`` does that).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .http_session import reason, verified_session
from .jobs import CancelCallback, ProgressCallback, check_cancel
from .queue_errors import (
    ConsensusFailed,
    LeaseLost,
    NotFound,
    Offline,
    QueueError,
    ServerError,
    TlsError,
    error_from_answer,
)

log = logging.getLogger("MedAnnotAssist.queue")

API = "/api/v1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CHUNK = 1 << 20
CONSENSUS_PARTS = ("consensus", "disagreement", "report")


@dataclass(frozen=True)
class Download:
    """A file written by a download: where, its SHA-256 (computed while it streamed), bytes, and the file name
    the server gave (``abdomen-1.nii.gz``: its suffix says the format)."""

    path: Path
    sha256: str
    size: int
    filename: str


@dataclass(frozen=True)
class CaseFiles:
    """A case's view and its files in the image cache (``ai_segmentation`` None when it has none)."""

    case: dict
    image: Path
    ai_segmentation: Path | None


class QueueClient:
    """One server (``url``: its root, e.g. ``https://queue.example.org``) and one user's ``token``.

    ``ca_bundle``: a PEM file of the certificate authorities to trust (wins over REQUESTS_CA_BUNDLE); TLS is
    always verified. Plain ``http://`` is accepted for a loopback server only, unless ``allow_http`` (the
    token and the images would cross the network in clear). ``timeout`` (s): the longest wait for an answer
    or between two blocks of a download; ``connect_timeout`` (s): for the connection. ``retries``: extra
    attempts of a retryable call, ``backoff_s`` the first wait (doubling, at most ``max_backoff_s``).
    ``sleep``: the wait function (tests pass a recorder). The token is never logged nor shown by ``repr``."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        ca_bundle: str | Path | None = None,
        allow_http: bool = False,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = check_settings(url, token, ca_bundle, allow_http)
        if timeout <= 0 or connect_timeout <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError(f"{self.url}: timeouts must be positive, retries and backoff_s not negative")
        self.ca_bundle = str(ca_bundle) if ca_bundle else None
        self.timeout, self.connect_timeout = float(timeout), float(connect_timeout)
        self.retries, self.backoff_s, self.max_backoff_s = int(retries), float(backoff_s), float(max_backoff_s)
        self._sleep = sleep
        self._session = verified_session(self.ca_bundle, token=token.strip())
        self._session.headers["User-Agent"] = "MedAnnotAssist-queue-client"
        self.user: str | None = None  # the caller's user name, once ``me()`` answered
        self.offline: bool | None = None  # None until the first call; then whether the last call got no answer
        self.last_offline: Offline | None = None
        self.clock_skew_s = 0.0  # the server's clock minus ours, from the last answer's Date header
        self._listeners: list[Callable[[bool], None]] = []

    def __repr__(self) -> str:
        return f"QueueClient({self.url!r}, user={self.user!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> QueueClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def on_connection_change(self, listener: Callable[[bool], None]) -> None:
        """``listener(online)`` when a call finds the server reachable after it was not, or the reverse. It is
        called on the thread that made the call (a job's): a panel model hands it to the GUI thread."""
        self._listeners.append(listener)

    # -- the calls ---------------------------------------------------------------------------------------
    def health(self) -> dict:
        """``{"status", "version", "database"}`` (no token needed): a cheap reachability probe."""
        return self._json("GET", "/health", retry=True)

    def me(self) -> dict:
        """The caller: ``id``, ``name``, ``email``, ``site_admin``, ``projects`` (``id``, ``name``, ``roles``)."""
        body = self._json("GET", "/me", retry=True)
        self.user = body["name"]
        return body

    def projects(self) -> list[dict]:
        return self._json("GET", "/projects", retry=True)

    def project(self, project_id: int) -> dict:
        """The project, its frozen protocol document (``protocol``) and checksum, and the caller's roles."""
        return self._json("GET", f"/projects/{int(project_id)}", retry=True)

    def progress(self, project_id: int) -> dict:
        return self._json("GET", f"/projects/{int(project_id)}/progress", retry=True)

    def claim(self, project_id: int, kind: str | None = None, lease_seconds: float | None = None) -> dict | None:
        """Lease the next task (``kind``: ``annotate`` or ``review``; both the roles allow when None); the task
        with its ``lease_id``, or None when nothing is free. Sent once (see the module's note)."""
        body = {key: value for key, value in (("kind", kind), ("lease_seconds", lease_seconds)) if value is not None}
        return self._json("POST", f"/projects/{int(project_id)}/tasks/claim", json=body)["task"]

    def my_tasks(self, project_id: int) -> list[dict]:
        """The caller's live leases in the project, each with its ``lease_id`` (after a crash too)."""
        return self._json("GET", f"/projects/{int(project_id)}/tasks", retry=True)

    def next_task(self, project_id: int, kind: str | None = None, lease_seconds: float | None = None) -> dict | None:
        """A lease the caller already holds (oldest first: a crash, or a claim whose answer was lost), else a
        new claim; None when nothing is free."""
        held = [task for task in self.my_tasks(project_id) if kind is None or task["kind"] == kind]
        return held[0] if held else self.claim(project_id, kind, lease_seconds)

    def claim_again(self, project_id: int, case_id: int, kind: str = "annotate", lease_seconds: float | None = None):
        """After ``LeaseLost``: a new lease on a task of the same case, if one is free for the caller, so the
        kept work can be resubmitted with it (``Outbox.retarget``); else None. The claim follows the queue's
        order (the server has no claim by case): a task of another case that it returns is released at once
        (the caller stays recorded as one of that case's readers, as after any claim)."""
        held = [t for t in self.my_tasks(project_id) if t["case_id"] == case_id and t["kind"] == kind]
        if held:
            return held[0]
        task = self.claim(project_id, kind, lease_seconds)
        if task is None or task["case_id"] == case_id:
            return task
        self.release(project_id, task["id"], task["lease_id"])
        return None

    def task(self, project_id: int, task_id: int) -> dict:
        return self._json("GET", f"/projects/{int(project_id)}/tasks/{int(task_id)}", retry=True)

    def heartbeat(self, project_id: int, task_id: int, lease_id: str, lease_seconds: float | None = None) -> dict:
        """Extend the lease; the task with its new ``lease_expires_at``. ``LeaseLost`` when it is gone."""
        body = {"lease_id": lease_id} | ({"lease_seconds": lease_seconds} if lease_seconds else {})
        path = f"/projects/{int(project_id)}/tasks/{int(task_id)}/heartbeat"
        return self._leased(project_id, task_id, lambda: self._json("POST", path, json=body, retry=True))

    def release(self, project_id: int, task_id: int, lease_id: str, reason: str | None = None) -> dict | None:
        """Give the task back to the queue (``reason``: why the reader skips it, kept in the audit log); its view,
        or None when a retry found the lease already gone (the first attempt went through)."""
        path = f"/projects/{int(project_id)}/tasks/{int(task_id)}/release"
        body = {"lease_id": lease_id} | ({"reason": reason} if reason else {})
        attempts = []

        def send():
            attempts.append(1)
            answer = self._send("POST", path, json=body)
            return answer.json()

        try:
            return self._leased(project_id, task_id, lambda: self._with_retries("POST", path, send, retry=True))
        except LeaseLost:
            if len(attempts) > 1:
                return None
            raise

    def cases(self, project_id: int, state: str | None = None, after: int = 0, limit: int = 100) -> list[dict]:
        params = {"after": int(after), "limit": int(limit)} | ({"state": state} if state else {})
        return self._json("GET", f"/projects/{int(project_id)}/cases", params=params, retry=True)

    def case(self, project_id: int, case_id: int) -> dict:
        """The case: ``state``, ``image_sha256``, ``ai_segmentation`` (its SHA-256), the tasks the caller may
        see, and ``consensus`` (its job: reviewers and admins; None for the case's readers until approval)."""
        return self._json("GET", f"/projects/{int(project_id)}/cases/{int(case_id)}", retry=True)

    def download_image(self, project_id: int, case_id: int, destination: Path, **kw) -> Download:
        return self.download(f"/projects/{int(project_id)}/cases/{int(case_id)}/image", destination, **kw)

    def download_ai_segmentation(self, project_id: int, case_id: int, destination: Path, **kw) -> Download:
        return self.download(f"/projects/{int(project_id)}/cases/{int(case_id)}/ai-segmentation", destination, **kw)

    def fetch_case(
        self, project_id: int, case, cache, ai: bool = True, progress: ProgressCallback | None = None, cancel=None
    ) -> CaseFiles:
        """The case's image and AI pre-segmentation (``ai``) as files of the ``ImageCache``, downloaded only
        when missing; ``case``: its id or its view. Run it as the prefetch job for the next task
        (``jobs.prefetch("next case", client.fetch_case, project_id, task["case_id"], cache)``)."""
        view = case if isinstance(case, dict) else self.case(project_id, case)
        case_id = int(view["id"])
        if not view.get("image_sha256"):
            raise NotFound(
                f"case {case_id} refers to a DICOMweb series: its image is not on the queue server",
                status=404,
                code="image_not_found",
            )
        image_part = 0.9 if ai and view.get("ai_segmentation") else 1.0

        def part(start: float, share: float):
            return None if progress is None else (lambda f, message: progress(start + share * f, message))

        image = cache.fetch(
            view["image_sha256"],
            lambda into: self.download_image(project_id, case_id, into, progress=part(0.0, image_part), cancel=cancel),
        )
        segmentation = None
        if ai and view.get("ai_segmentation"):
            segmentation = cache.fetch(
                view["ai_segmentation"],
                lambda into: self.download_ai_segmentation(
                    project_id, case_id, into, progress=part(image_part, 1 - image_part), cancel=cancel
                ),
            )
        if progress is not None:
            progress(1.0, f"case {view['name']} ready")
        return CaseFiles(view, image, segmentation)

    def submissions(self, project_id: int, case_id: int) -> list[dict]:
        """The case's submissions the caller may see (a reader: their own until approval), with metadata."""
        return self._json("GET", f"/projects/{int(project_id)}/cases/{int(case_id)}/submissions", retry=True)

    def download_submission(self, project_id: int, submission_id: int, destination: Path, **kw) -> Download:
        return self.download(f"/projects/{int(project_id)}/submissions/{int(submission_id)}/file", destination, **kw)

    def submit(
        self,
        project_id: int,
        task_id: int,
        lease_id: str,
        segmentation: Path,
        metadata: dict | str,
        idempotency_key: str | None,
        filename: str | None = None,
    ) -> dict:
        """Send a reader's ``.seg.nrrd`` and metadata (a dict, or its JSON text sent as is); the server's 201
        answer. With an ``idempotency_key`` a lost answer is retried safely; prefer ``Outbox``, which keeps
        the submission until the server acknowledged it."""
        path = Path(segmentation)
        text = metadata if isinstance(metadata, str) else json.dumps(metadata, allow_nan=False)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}

        def files():
            return {"segmentation": (filename or path.name, open(path, "rb"), "application/octet-stream")}

        call = f"/projects/{int(project_id)}/tasks/{int(task_id)}/submissions"
        data = {"lease_id": lease_id, "metadata": text}
        return self._leased(
            project_id,
            task_id,
            lambda: self._json("POST", call, data=data, files=files, headers=headers, retry=bool(idempotency_key)),
        )

    def consensus(self, project_id: int, case_id: int) -> dict:
        """Agreement of the latest round: ``readers``, ``agreement``, ``overrides`` by reader. ``Blinded`` for a
        reader of the case before approval; ``NotFound`` (``consensus_not_found``) while readers work."""
        return self._json("GET", f"/projects/{int(project_id)}/cases/{int(case_id)}/consensus", retry=True)

    def download_consensus_part(self, project_id: int, case_id: int, part: str, destination: Path, **kw) -> Download:
        """``part``: ``consensus`` (.seg.nrrd), ``disagreement`` (.nrrd) or ``report`` (HTML)."""
        if part not in CONSENSUS_PARTS:
            raise ValueError(f"consensus part: expected one of {', '.join(CONSENSUS_PARTS)}, got '{part}'")
        path = f"/projects/{int(project_id)}/cases/{int(case_id)}/consensus/{part}"
        return self.download(path, destination, **kw)

    def download_final(self, project_id: int, case_id: int, destination: Path, **kw) -> Download:
        return self.download(f"/projects/{int(project_id)}/cases/{int(case_id)}/final", destination, **kw)

    def wait_for_consensus(
        self, project_id: int, case_id: int, timeout_s: float = 600.0, poll_s: float = 1.0, cancel=None
    ) -> dict:
        """Poll a case whose readers are all in until its consensus job moved it on (``review``, or
        ``approved`` with review off); the case. ``ConsensusFailed`` when the job failed for good (its reason
        given), ``TimeoutError`` after ``timeout_s``. For reviewers and admins (readers see no job)."""
        deadline = time.monotonic() + timeout_s
        while True:
            case = self.case(project_id, case_id)
            job = case.get("consensus")
            if case["state"] != "annotating":
                return case
            if job and job.get("state") == "failed":
                raise ConsensusFailed(
                    f"case {case_id}: the consensus failed after {job.get('attempts')} attempt(s): {job.get('error')}",
                    code="consensus_failed",
                    details={"job": job},
                )
            check_cancel(cancel, f"waiting for the consensus of case {case_id}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"case {case_id}: no consensus within {timeout_s:g} s (job: {job})")
            self._sleep(poll_s)

    def upload_edited(self, project_id: int, task_id: int, lease_id: str, segmentation: Path) -> dict:
        """The reviewer's edited final (before a decision that takes ``edited`` structures). Sent once."""
        path = Path(segmentation)

        def files():
            return {"segmentation": (path.name, open(path, "rb"), "application/octet-stream")}

        call = f"/projects/{int(project_id)}/tasks/{int(task_id)}/review/edited"
        return self._leased(
            project_id, task_id, lambda: self._json("POST", call, data={"lease_id": lease_id}, files=files)
        )

    def review(
        self,
        project_id: int,
        task_id: int,
        lease_id: str,
        decision: str,
        structures: dict | None = None,
        returns: list[dict] | None = None,
        overrides: list[dict] | None = None,
        comment: str | None = None,
    ) -> dict:
        """``approve`` (per structure ``accept_consensus`` / ``take_reader`` / ``edited``) or ``return`` to
        readers (``[{"reader", "comment"}]``). Sent once: after ``Offline``, read the case's state."""
        body = {"lease_id": lease_id, "decision": decision, "structures": structures or {}, "returns": returns or []}
        body |= {"overrides": overrides} if overrides else {}
        body |= {"comment": comment} if comment else {}
        call = f"/projects/{int(project_id)}/tasks/{int(task_id)}/review"
        return self._leased(project_id, task_id, lambda: self._json("POST", call, json=body))

    # -- downloads ---------------------------------------------------------------------------------------
    def download(
        self,
        path: str,
        destination: Path,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> Download:
        """Stream ``GET {api}{path}`` into ``destination`` (a file; written whole or not at all: a temporary
        file beside it is renamed at the end). Retried from the start when the connection drops."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        temporary = destination.with_name(f".{destination.name}.{uuid.uuid4().hex[:8]}.part")

        def fetch():
            answer = self._send("GET", path, stream=True)
            try:
                total = int(answer.headers.get("Content-Length") or 0)
                digest, size = hashlib.sha256(), 0
                with open(temporary, "wb") as out:
                    for block in answer.iter_content(CHUNK):
                        check_cancel(cancel, f"the download of {path}")
                        out.write(block)
                        digest.update(block)
                        size += len(block)
                        if progress is not None and total:
                            progress(min(size / total, 1.0), f"{size / 1e6:.1f} of {total / 1e6:.1f} MB")
                    out.flush()
                    os.fsync(out.fileno())
                return digest.hexdigest(), size, _filename(answer.headers.get("Content-Disposition", ""))
            except Exception:
                temporary.unlink(missing_ok=True)
                raise
            finally:
                answer.close()

        sha256, size, filename = self._with_retries("GET", path, fetch, retry=True)
        os.replace(temporary, destination)
        return Download(destination, sha256, size, filename or destination.name)

    # -- plumbing ----------------------------------------------------------------------------------------
    def _leased(self, project_id: int, task_id: int, call: Callable):
        """``call()``; a ``LeaseLost`` it raises learns which task it was about."""
        try:
            return call()
        except LeaseLost as error:
            error.project_id, error.task_id = int(project_id), int(task_id)
            raise

    def _json(self, method: str, path: str, *, retry: bool = False, **kw):
        def call():
            answer = self._send(method, path, **kw)
            try:
                return answer.json()
            except ValueError:
                raise QueueError(
                    f"{self.url}{API}{path}: the answer is not JSON: is {self.url} the queue server's address?",
                    status=answer.status_code,
                    code="not_json",
                    url=answer.url,
                ) from None

        return self._with_retries(method, path, call, retry)

    def _with_retries(self, method: str, path: str, call: Callable, retry: bool):
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except (Offline, ServerError) as error:
                if attempt == attempts:
                    raise
                wait = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                if isinstance(error, ServerError) and error.retry_after is not None:
                    wait = min(max(wait, error.retry_after), self.max_backoff_s)
                log.info(
                    "%s %s: %s; attempt %d of %d in %.1f s", method, path, error.message, attempt + 1, attempts, wait
                )
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, *, files: Callable | None = None, stream: bool = False, **kw):
        """One request; a 2xx answer, else the typed error. ``files``: a function making the multipart files
        (opened again for each attempt)."""
        import requests

        url = f"{self.url}{API}{path}"
        opened = files() if files is not None else None
        started = time.perf_counter()
        try:
            answer = self._session.request(
                method, url, files=opened, stream=stream, timeout=(self.connect_timeout, self.timeout), **kw
            )
        except requests.exceptions.SSLError as error:
            gist = reason(error)
            hint = "give the CA bundle that signed it (ca_bundle)" if gist == "certificate verify failed" else ""
            raise TlsError(
                f"{url}: the TLS certificate of {urlsplit(self.url).hostname} could not be verified ({gist}); {hint}"
                if hint
                else f"{url}: TLS failed ({gist})",
                code="tls",
                url=url,
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
            offline = Offline(
                f"{self.url} does not answer ({reason(error)}): you are offline or the server is down",
                code="offline",
                url=url,
            )
            self._connection(False, offline)
            raise offline from None
        except requests.exceptions.RequestException as error:
            raise QueueError(f"{url}: {reason(error)}", code="request_failed", url=url) from None
        finally:
            for _field, (_name, handle, _type) in (opened or {}).items():
                handle.close()
        self._connection(True)
        self._note_clock(answer.headers.get("Date"))
        log.debug(
            "%s %s%s: %d in %.0f ms", method, API, path, answer.status_code, 1e3 * (time.perf_counter() - started)
        )
        if answer.status_code < 400:
            return answer
        try:
            body = answer.json()
        except ValueError:
            body = None
        finally:
            answer.close()
        raise error_from_answer(answer.status_code, body, url, answer.headers.get("Retry-After"))

    def _connection(self, online: bool, error: Offline | None = None) -> None:
        changed = self.offline is not (not online)
        self.offline, self.last_offline = not online, error
        if changed:
            for listener in list(self._listeners):
                try:
                    listener(online)
                except Exception:  # a panel's listener must not break the call that noticed the change
                    log.exception("connection listener %r failed", listener)

    def _note_clock(self, date: str | None) -> None:
        if date:
            with contextlib.suppress(TypeError, ValueError):
                # Date has whole seconds: its middle is the best guess, and under 2 s off is no skew at all
                skew = parsedate_to_datetime(date).timestamp() + 0.5 - time.time()
                self.clock_skew_s = skew if abs(skew) >= 2.0 else 0.0

    def server_time(self) -> float:
        """Now on the server's clock (epoch seconds), from the last answer's Date header: lease countdowns."""
        return time.time() + self.clock_skew_s


def check_settings(url: str, token: str, ca_bundle: str | Path | None = None, allow_http: bool = False) -> str:
    """The server's root URL, once the URL, the token's form and the CA bundle are fine (``ValueError`` naming
    what is wrong otherwise). No network: a panel checks what the user typed before signing in."""
    root = _server_root(url, allow_http)
    if not isinstance(token, str) or not token.strip() or any(c.isspace() for c in token.strip()):
        raise ValueError(f"{root}: the token must be one word without spaces (it is shown once by the server)")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise ValueError(f"{root}: CA bundle {ca_bundle}: no such file")
    return root


def _server_root(url: str, allow_http: bool) -> str:
    text = str(url).strip().rstrip("/")
    text = text[: -len(API)] if text.endswith(API) else text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"queue server URL: expected its address like https://queue.example.org, got '{url}'")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"queue server URL: no user, query or fragment, and the token goes apart; got '{url}'")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS and not allow_http:
        raise ValueError(
            f"queue server URL {text}: plain http to another machine would send the token and the images in "
            "clear; use https (the server runs behind a TLS proxy), or allow_http on a network you trust"
        )
    return text


def _filename(disposition: str) -> str:
    """The file name of a Content-Disposition header (``filename*=utf-8''…`` or ``filename="…"``), as a plain
    name (never a path)."""
    match = re.search(r"filename\*=(?:utf-8|UTF-8)''([^;]+)", disposition) or re.search(
        r'filename="?([^";]+)"?', disposition
    )
    return Path(unquote(match.group(1))).name if match else ""
