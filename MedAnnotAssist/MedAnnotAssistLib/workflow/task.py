"""The task panel's model: server and token, connect, the next task, the lease countdown, submit / release /
skip with a reason, the offline indicator and the outbox, a lost lease (the work kept; a new claim of the
case if one is free), and the case's active time.

Every server call runs in a ``Background`` job; ``poll()`` applies the results on the caller's thread, opens
the claimed case in the scene (``mrml.TaskSession``), follows the lease (``core.lease.Lease`` beaten by a
``core.jobs.Heartbeat``) and delivers the outbox every ``sync_interval_s``. Submissions always go through
the durable ``core.outbox.Outbox``: written first, then sent with their Idempotency-Key.

Events besides ``changed``: ``session`` (``session``: the opened ``TaskSession`` or None when the case
closed), ``review_task`` (``task``, ``lease``, ``case``: a review task for the review model), ``submitted``
(``entry``: the outbox entry, delivered or waiting), ``lease_lost`` (``task_state``, ``case_id``).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.dicom.web import DicomWebSource
from ..core.image_cache import ImageCache
from ..core.jobs import Heartbeat
from ..core.lease import Lease
from ..core.outbox import DELIVERED, FAILED, Outbox, OutboxEntry
from ..core.protocol import Protocol, validate_protocol_data
from ..core.queue_client import QueueClient, check_settings
from ..core.queue_errors import Offline
from ..mrml.task_session import TaskSession
from .background import Background
from .case_files import fetch_task
from .events import Action, Model
from .settings import WorkstationSettings
from .task_state import (
    CALL_JOB,
    CASE_JOB,
    CONNECTED,
    CONNECTING,
    DISCONNECTED,
    SUBMIT_JOB,
    SYNC_JOB,
    TaskState,
    build_state,
    error_text,
    error_text_of,
    lease_row,
    lost_from,
    outbox_counts,
    task_actions,
)

log = logging.getLogger("MedAnnotAssist.workflow")


@dataclass
class CurrentTask:
    """The task in hand: the claim, its lease and heartbeat, the case, and (annotate) the open session."""

    task: dict
    lease: Lease
    heartbeat: Heartbeat
    case: dict
    session: TaskSession | None = None
    lost_seen: bool = False

    @property
    def kind(self) -> str:
        return self.task["kind"]


class TaskModel(Model):
    """See the module docstring. ``context``: the scene (``mrml.scene.SceneContext``); ``clock``: seconds
    (the activity clock of opened cases and the outbox schedule; ``ManualClock`` in tests)."""

    def __init__(
        self,
        context,
        background: Background,
        settings: WorkstationSettings | None = None,
        *,
        outbox: Outbox | None = None,
        cache: ImageCache | None = None,
        work_dir: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        client_options: dict | None = None,
    ):
        super().__init__()
        self.context, self.background = context, background
        self.settings = settings or WorkstationSettings()
        self.outbox = outbox if outbox is not None else Outbox()
        self.cache = cache if cache is not None else ImageCache()
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="medannot-work-"))
        self.clock = clock
        self.client_options = dict(client_options or {})
        self.client: QueueClient | None = None
        self.connection = DISCONNECTED
        self.projects: list[dict] = []
        self.project: dict | None = None
        self.protocol: Protocol | None = None
        self.current: CurrentTask | None = None
        self.gate: Callable[[], Action] | None = None  # the protocol and questions models' Submit gate
        self.dicomweb_sources: dict[str, DicomWebSource] = {}  # where cases known by a DICOMweb reference live
        self.pending = 0
        self.failed: list[OutboxEntry] = []
        self._next_sync = 0.0
        self._outbox_changes = 0  # counts from a delivery that began before the last submit are stale
        self.background.on_error = lambda name, error: self._fail(f"{name}: {error}")

    # ---- reading ---------------------------------------------------------------------------------------

    @property
    def session(self) -> TaskSession | None:
        return self.current.session if self.current else None

    def times(self):
        """The open case's ``ActiveTimes`` (exact seconds), or None."""
        return self.session.times() if self.session else None

    def _build(self) -> TaskState:
        return build_state(self)

    def _actions(self) -> dict[str, Action]:
        return task_actions(self)

    def _refuse(self, action: str) -> bool:
        """True (and the reason told) when ``action`` is off now."""
        state = self._actions()[action]
        if not state.enabled:
            self.tell(f"{action.replace('_', ' ')}: {state.reason}", error=True)
            self.refresh()
        return not state.enabled

    def _fail(self, text: str) -> None:
        self.tell(text, error=True)
        self.refresh()

    def add_dicomweb_source(self, source: DicomWebSource) -> None:
        """A DICOMweb server (with its credentials, kept like the token) whose series the project's cases refer
        to: their images are retrieved from it (WADO-RS) and they export back to it."""
        self.dicomweb_sources[source.url] = source

    # ---- connecting and the project ------------------------------------------------------------------

    def connect(self, token: str, server_url: str | None = None, ca_bundle: str | None = None) -> bool:
        """Sign in with ``token`` (kept only inside the client's session: never in the state, the settings or
        a log); then the user's projects are listed, and the last project chosen is chosen again. What the user
        typed is checked here; the client is made and asked in a job."""
        if self._refuse("connect"):
            return False
        url = server_url if server_url is not None else self.settings.server_url
        bundle = ca_bundle if ca_bundle is not None else self.settings.ca_bundle
        options = dict(self.client_options)
        try:
            root = check_settings(url, token, bundle, options.get("allow_http", False))
        except ValueError as error:
            self._fail(str(error))
            return False
        self.connection = CONNECTING
        self.settings.server_url, self.settings.ca_bundle = root, bundle

        def work(progress, cancel):
            client = QueueClient(root, token, ca_bundle=bundle, **options)
            try:
                return client, client.me(), client.projects()
            except Exception:
                client.close()
                raise

        self.background.start("connect", work, self._connected, self._connect_failed)
        self.tell(f"connecting to {root}")
        self.refresh()
        return True

    def _connected(self, answer) -> None:
        self.client, me, projects = answer
        roles = {p["id"]: p.get("roles", []) for p in me.get("projects", [])}
        self.projects = [{"id": p["id"], "name": p["name"], "roles": roles.get(p["id"], [])} for p in projects]
        self.connection, self.settings.user = CONNECTED, me["name"]
        self.tell(f"signed in as {me['name']}")
        self._next_sync = 0.0  # deliver what the outbox kept at once
        chosen = self.settings.project_id
        if chosen not in {p["id"] for p in self.projects} and len(self.projects) == 1:
            chosen = self.projects[0]["id"]
        if chosen in {p["id"] for p in self.projects}:
            self.select_project(chosen)
        self.refresh()

    def _connect_failed(self, error) -> None:
        self.connection = DISCONNECTED
        self._fail(error_text(error))

    def disconnect(self) -> bool:
        if self._refuse("disconnect"):
            return False
        client = self.client
        self.background.start("disconnect", lambda progress, cancel: client.close())
        self.client, self.connection, self.projects, self.project, self.protocol = None, DISCONNECTED, [], None, None
        self.tell("disconnected")
        self.refresh()
        return True

    def select_project(self, project_id: int) -> bool:
        """Choose a project: its frozen protocol is fetched (the panels are built from it)."""
        if self._refuse("select_project"):
            return False
        client = self.client

        def work(progress, cancel):
            return client.project(project_id)

        self.background.start(CALL_JOB, work, self._project_loaded, lambda e: self._fail(error_text(e)))
        self.refresh()
        return True

    def _project_loaded(self, project: dict) -> None:
        frozen = project.get("protocol") or {}
        document = frozen.get("document")
        source = f"project {project.get('name')} (id {project['id']})"
        problems = validate_protocol_data(document, source)
        if problems:
            self._fail(f"{source}: its protocol is not one this version reads: {problems[0]}")
            return
        protocol = Protocol.from_json(document, source)
        if frozen.get("checksum") and protocol.checksum != frozen["checksum"]:
            self._fail(f"{source}: the protocol document does not match the checksum the server froze")
            return
        self.project = {"id": project["id"], "name": project["name"], "roles": project.get("roles", [])}
        self.protocol = protocol
        self.settings.project_id = project["id"]
        self.tell(f"project {project['name']}: protocol {self.protocol.label}")
        self.emit("project", project=self.project, protocol=self.protocol)
        self.refresh()

    # ---- the next task ------------------------------------------------------------------------------

    def next_task(self) -> bool:
        """Claim the next task (a lease held from before comes first) and load its case; a review task goes
        to the review model (event ``review_task``)."""
        if self._refuse("next_task"):
            return False
        client, cache, project_id = self.client, self.cache, self.project["id"]
        kind, seconds, sources = self.settings.task_kind, self.settings.lease_seconds, dict(self.dicomweb_sources)

        def work(progress, cancel):
            task = client.next_task(project_id, kind, seconds)
            return None if task is None else fetch_task(client, cache, project_id, task, sources, progress, cancel)

        self.background.start(CASE_JOB, work, self._claimed, lambda e: self._fail(error_text(e)))
        self.tell("claiming the next task")
        self.refresh()
        return True

    def _claimed(self, claimed) -> None:
        if claimed is None:
            self.tell(f"no task is free for you in {self.project['name']} now")
            self.refresh()
            return
        task, case, files = claimed
        lease = Lease(self.client, self.project["id"], task, self.settings.lease_seconds)
        self.current = CurrentTask(task, lease, Heartbeat(lease).start(), case)
        if isinstance(files, Exception):
            self._fail(f"{case['name']} could not be loaded: {error_text(files)}; release or skip it")
        elif files is None:
            self.tell(f"review of case {case['name']}")
            self.emit("review_task", task=dict(task), lease=lease, case=case)
        else:
            self._open(files)
        self.refresh()

    def _open(self, files) -> None:
        task, case = self.current.task, self.current.case
        info = {
            "task_id": task["id"],
            "case_id": case["id"],
            "case_name": case["name"],
            "project_id": self.project["id"],
            "round": task.get("round", 1),
        }
        try:
            session = TaskSession.open(
                self.context,
                self.protocol,
                files.image,
                files.ai_segmentation,
                info,
                self.clock,
                idle_after_s=self.settings.idle_after_s,
                name=case["name"],
            )
        except Exception as error:  # a broken file: the task stays claimed, the reader releases or skips it
            self._fail(f"case {case['name']} could not be opened: {error}")
            return
        self.current.session = session
        comment = f" (returned: {task['comment']})" if task.get("comment") else ""
        self.tell(f"case {case['name']} ({task['kind']}, round {task.get('round', 1)}){comment}")
        self.emit("session", session=session)

    # ---- submit, release, skip ------------------------------------------------------------------------

    def submit(self) -> bool:
        """Check the protocol gate, pack the case (the .seg.nrrd and its metadata: times, states, history),
        write it to the outbox and send it. Delivered or waiting (offline), the case closes; refused for a
        lost lease, it stays in the outbox for a new claim (``claim_again``)."""
        if self._refuse("submit"):
            return False
        current, session = self.current, self.session
        check = session.check()
        if not check.ready:
            self._fail("submit: " + "; ".join(check.messages()))
            return False
        folder = self.work_dir / f"task-{current.task['id']}"
        try:
            path, metadata = session.pack(folder)
        except (OSError, ValueError) as error:  # a full disk, a segment Slicer cannot write
            self._fail(f"submit: the case could not be packed: {error}")
            return False
        client, outbox, project_id, task = self.client, self.outbox, self.project["id"], dict(current.task)

        def work(progress, cancel):
            entry = outbox.enqueue(client.url, project_id, task, path, metadata, client.user)
            shutil.rmtree(folder, ignore_errors=True)  # the outbox holds its own copy
            entry = outbox.send(client, entry.id)
            return entry, outbox_counts(client, outbox)

        self.background.start(SUBMIT_JOB, work, self._submitted, lambda e: self._fail(f"submit: {error_text(e)}"))
        self.tell(f"submitting case {current.case['name']}")
        self.refresh()
        return True

    def _submitted(self, answer) -> None:
        entry, counts = answer
        self._counted(counts)
        name = self.current.case["name"] if self.current else f"case {entry.case_id}"
        if entry.state == FAILED and entry.error_code != "lease_lost":
            # refused on its content (the server's rules disagreeing with ours): the case stays open to fix
            self.outbox.discard(entry.id)
            self.failed = [e for e in self.failed if e.id != entry.id]
            failures = "; ".join(f.get("message", "") for f in entry.failures) or (entry.error or {}).get("message")
            self._fail(f"the server refused {name}: {failures}")
            return
        if entry.state == FAILED:
            self.current.lease.lost = self.current.lease.lost or lost_from(entry)
            self._announce_lost(f"{name}: the lease was lost; your work is kept in the outbox: Claim again to send it")
            self.refresh()
            return
        words = f"submission {entry.response['submission_id']}" if entry.state == DELIVERED else "in the outbox"
        self._close_task(f"{name}: submitted ({words})")
        self.emit("submitted", entry=entry)

    def release(self) -> bool:
        """Give the task back to the queue; the case closes and the work is dropped."""
        if self._refuse("release"):
            return False
        return self._give_back(None)

    def skip(self, reason: str) -> bool:
        """Give the case back with ``reason`` (recorded by the server) and take the next one: the next claim is
        made while this case is still held, so the queue does not hand the same case back at once."""
        if self._refuse("skip"):
            return False
        if not isinstance(reason, str) or not reason.strip():
            self._fail("skip: give a reason (it is recorded with the case)")
            return False
        return self._give_back(reason.strip())

    def _give_back(self, reason: str | None) -> bool:
        client, cache, project_id, lease = self.client, self.cache, self.project["id"], self.current.lease
        kind, seconds, sources = self.settings.task_kind, self.settings.lease_seconds, dict(self.dicomweb_sources)

        def work(progress, cancel):
            following = None
            if reason is not None:
                task = client.claim(project_id, kind, seconds)
                following = (
                    None if task is None else fetch_task(client, cache, project_id, task, sources, progress, cancel)
                )
            client.release(project_id, lease.task_id, lease.lease_id, reason=reason)
            lease.released = True
            return following

        def done(following) -> None:
            name = self.current.case["name"]
            self._close_task(f"{name} skipped: {reason}" if reason else f"{name} released")
            if following is not None:
                self._claimed(following)

        self.background.start(CASE_JOB, work, done, lambda e: self._fail(error_text(e)))
        self.refresh()
        return True

    def _close_task(self, message: str) -> None:
        current, self.current = self.current, None
        if current is not None:
            current.heartbeat.stop(wait=False)
            if current.session is not None and not current.session.closed:
                current.session.close()
                self.emit("session", session=None)
        self.cache.pinned = set()
        self.tell(message)
        self.refresh()

    def finish(self, message: str) -> None:
        """The review model decided the review task in hand (approved or returned)."""
        self._close_task(message)

    # ---- a lost lease, the outbox -----------------------------------------------------------------------

    def claim_again(self, entry_id: int | None = None) -> bool:
        """After a lost lease: claim a free task of the same case. With the case open, it goes on under the new
        lease, and a submission the server refused for the lost lease is made again from the scene (edits made
        since included). Without it, the submission kept in the outbox (``entry_id``, else the oldest) is sent
        with the new claim."""
        if self._refuse("claim_again"):
            return False
        kept = [e for e in self.failed if e.error_code == "lease_lost"]
        entry = None
        if entry_id is not None:
            entry = next((e for e in kept if e.id == entry_id), None)
            if entry is None:
                self._fail(f"claim again: no submission {entry_id} refused for a lost lease in the outbox")
                return False
        open_case = self.session is not None and (entry is None or entry.case_id == self.current.task["case_id"])
        if open_case:
            entry = None
        elif entry is None:
            entry = kept[0] if kept else None
        case_id = self.current.task["case_id"] if open_case or entry is None else entry.case_id
        client, outbox, project_id = self.client, self.outbox, self.project["id"]
        kind, seconds = (self.current.kind if self.current else "annotate"), self.settings.lease_seconds

        def work(progress, cancel):
            task = client.claim_again(project_id, case_id, kind, seconds)
            if task is None or entry is None:
                return task, None, outbox_counts(client, outbox)
            sent = outbox.send(client, outbox.retarget(entry.id, task).id)
            return task, sent, outbox_counts(client, outbox)

        self.background.start(
            CALL_JOB, work, lambda r: self._claimed_again(case_id, *r), lambda e: self._fail(error_text(e))
        )
        self.refresh()
        return True

    def _claimed_again(self, case_id: int, task: dict | None, entry: OutboxEntry | None, counts) -> None:
        self._counted(counts)
        if task is None:
            self._fail(f"no task of case {case_id} is free for you now; your work is kept (try again later)")
            return
        current = self.current
        if entry is None and current is not None and current.task["case_id"] == case_id:
            current.heartbeat.stop(wait=False)
            lease = Lease(self.client, self.project["id"], task, self.settings.lease_seconds)
            current.task, current.lease, current.lost_seen = dict(task), lease, False
            current.heartbeat = Heartbeat(lease).start()
            if current.session is not None:
                current.session.task_info.update(task_id=task["id"])
            refused = [e for e in self.failed if e.error_code == "lease_lost" and e.case_id == case_id]
            self.tell(f"case {current.case['name']}: claimed again (task {task['id']}); go on working")
            if refused and self.submit():  # the reader had pressed Submit: again, from the scene as it is now
                for old in refused:
                    self.outbox.discard(old.id)
                self.failed = [e for e in self.failed if e not in refused]
        elif entry is None:
            self.tell(f"case {case_id}: claimed again (task {task['id']})")
        elif entry.state == FAILED:
            self._fail(f"case {case_id}: the submission with the new claim was refused: {error_text_of(entry)}")
        else:
            words = f"submission {entry.response['submission_id']}" if entry.state == DELIVERED else "in the outbox"
            self.tell(f"case {case_id}: submitted with a new claim ({words})")
            self.emit("submitted", entry=entry)
        self.refresh()

    def discard(self, entry_id: int) -> bool:
        """Give up a refused submission kept in the outbox (its file is deleted)."""
        entry = next((e for e in self.failed if e.id == entry_id), None)
        if entry is None:
            self._fail(f"outbox: no refused submission {entry_id}")
            return False
        self.outbox.discard(entry_id)
        self.failed = [e for e in self.failed if e.id != entry_id]
        self.tell(f"submission of case {entry.case_id} discarded")
        self.refresh()
        return True

    def sync(self) -> bool:
        """Send what the outbox holds now (and see whether the server answers again)."""
        if self._refuse("sync"):
            return False
        self._start_sync(force=True)
        return True

    def _start_sync(self, force: bool = False) -> None:
        client, outbox = self.client, self.outbox

        def work(progress, cancel):
            if outbox.pending_count(client.url):
                outbox.deliver(client, force=force)
            else:
                client.health()  # the offline indicator follows the server even when nothing waits
            return outbox_counts(client, outbox)

        self._next_sync = self.clock() + self.settings.sync_interval_s
        began = self._outbox_changes
        self.background.start(SYNC_JOB, work, lambda counts: self._synced(began, counts), self._sync_failed)

    def _sync_failed(self, error) -> None:
        if not isinstance(error, Offline):  # offline is the indicator's; anything else is worth saying
            self.tell(f"outbox: {error_text(error)}", error=True)
        self.refresh()

    def _synced(self, began: int, counts) -> None:
        if began == self._outbox_changes:
            self._counted(counts)
        self.refresh()

    def _counted(self, counts) -> None:
        self._outbox_changes += 1
        pending, failed = counts
        if pending < self.pending and self.current is None:
            self.tell(f"{self.pending - pending} submission(s) delivered from the outbox")
        self.pending, self.failed = pending, failed

    # ---- time ---------------------------------------------------------------------------------------

    def pause(self) -> None:
        """The application lost the focus (or the reader pressed Pause): no time counts until ``resume``."""
        if self.session is not None:
            self.session.pause()
            self.refresh()

    def resume(self) -> None:
        if self.session is not None:
            self.session.resume()
            self.refresh()

    def touch(self, structure_id: str | None = None) -> None:
        """Any interaction with the case (a scroll, a click in a view, a key): time keeps counting."""
        if self.session is not None:
            self.session.touch(structure_id)

    def _announce_lost(self, text: str) -> None:
        current = self.current
        current.lost_seen = True
        self.tell(text, error=True)
        self.emit("lease_lost", task_state=current.lease.lost.task_state, case_id=current.task["case_id"])

    # ---- the pump --------------------------------------------------------------------------------------

    def poll(self) -> bool:
        """Hand finished jobs over (on this thread), follow the lease and the outbox, announce changes. The
        front-end calls it often (``Workstation.poll`` does it for every model)."""
        self.background.poll()
        current = self.current
        if current is not None and current.lease.lost is not None and not current.lost_seen:
            self._announce_lost(f"case {current.case['name']}: {lease_row(self).text}")
        outbox_busy = any(self.background.running(name) for name in (SYNC_JOB, SUBMIT_JOB, CALL_JOB))
        if self.connection == CONNECTED and not outbox_busy and self.clock() >= self._next_sync:
            self._start_sync(force=self._next_sync == 0.0)
        return self.refresh()

    def close(self) -> None:
        """The application closes: heartbeats stop and the case leaves the scene; the lease stays (the next
        ``next_task`` takes it up again) and the outbox keeps what was not sent."""
        if self.current is not None:
            current, self.current = self.current, None
            current.heartbeat.stop(wait=False)
            if current.session is not None:
                current.session.close()
        self.client = None  # its connections close with it; the outbox keeps what was not sent
