"""Fixtures of the workflow models' tests: the real queue server (Testing/server's harness), a chest project
whose protocol document is uploaded (the lungs the CT engine proposes, the liver of the case's AI
pre-segmentation, the Lung-RADS question), annotators ``a`` and ``b``, a reviewer, the real sample CT as the
case, and a ``desk`` per user: a ``Workstation`` on its own headless scene, signed in with the user's token."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from MedAnnotAssistLib.core.image_cache import ImageCache
from MedAnnotAssistLib.core.outbox import Outbox
from MedAnnotAssistLib.mrml.scene import SceneContext
from MedAnnotAssistLib.workflow.settings import WorkstationSettings
from MedAnnotAssistLib.workflow.workstation import Workstation
from Testing.server import conftest as server
from Testing.server.conftest import Queue
from Testing.server.harness import Api, unique
from Testing.task_case import chest_protocol, write_ai_liver

# the server tests' fixtures: PostgreSQL (for start_queue), started queues
postgres_cluster, database_for, start_queue = server.postgres_cluster, server.database_for, server.start_queue
LUNG_REASON = "30 slices: only the lung bases are in this scan"
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    """One SQLite server for a whole test module (each test makes its own project and users)."""
    instance = Queue(tmp_path_factory.mktemp("queue"), None)
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def protocol():
    return chest_protocol()


@pytest.fixture(scope="session")
def ai_liver(tmp_path_factory, sample_dir, protocol):
    return write_ai_liver(tmp_path_factory.mktemp("ai") / "chest-1.ai.seg.nrrd", sample_dir, protocol)


@dataclass
class Study:
    """A project on ``queue`` with the chest protocol, two readers per case, review on; one case (the sample
    CT, its AI liver attached)."""

    queue: Queue
    project_id: int
    case_id: int
    admin: Api
    a: Api
    b: Api
    reviewer: Api
    root: Path
    desks: list = field(default_factory=list)

    def desk(self, who: Api, **options) -> Workstation:
        """A workstation for ``who`` on its own scene, outbox and cache, connected and in the project."""
        folder = self.root / f"desk-{who.name}-{len(self.desks)}"
        settings = options.pop("settings", None) or WorkstationSettings(
            server_url=self.queue.url, sync_interval_s=0.5, review_poll_s=0.3
        )
        desk = Workstation(
            options.pop("context", None) or SceneContext.headless(),
            settings,
            work_dir=folder / "work",
            outbox=options.pop("outbox", None) or Outbox(folder / "outbox", backoff_s=0.2, max_backoff_s=1.0),
            cache=ImageCache(folder / "cache"),
            client_options={"backoff_s": 0.01, "retries": 1},
            **options,
        )
        self.desks.append(desk)
        assert desk.task.connect(who.token)
        desk.wait_until(lambda: desk.task.protocol is not None, TIMEOUT_S)
        return desk

    def close(self) -> None:
        for desk in self.desks:
            desk.close()


def make_study(
    queue: Queue, protocol, sample_dir: Path, ai_liver, root: Path, readers: int = 2, names: dict | None = None
) -> Study:
    """``names``: the project's, the case's and the users' (keys project, case, a, b, reviewer) instead of
    unique ones (a user guide's pictures show them; then only once per server)."""
    names = names or {key: unique(key) for key in ("a", "b", "reviewer")} | {"project": unique("chest")}
    admin = queue.admin
    body = {"name": names["project"], "protocol": protocol.raw, "readers_per_case": readers, "review": True}
    project_id = admin.ok(admin.post("/api/v1/projects", json=body), 201)["id"]
    users = {}
    for role, name in (("annotator", "a"), ("annotator", "b"), ("reviewer", "reviewer")):
        users[name] = admin.new_user(names[name])
        admin.set_roles(project_id, users[name].name, role)
    case = admin.upload_case(project_id, sample_dir / "example_ct_sm.nii.gz", names.get("case") or unique("chest"))
    with open(ai_liver[0], "rb") as handle:
        answer = admin.put(
            f"/api/v1/projects/{project_id}/cases/{case['id']}/ai-segmentation",
            files={"segmentation": (ai_liver[0].name, handle, "application/octet-stream")},
            data={"engine": "totalsegmentator"},
        )
    admin.ok(answer)
    return Study(queue, project_id, case["id"], admin, users["a"], users["b"], users["reviewer"], root)


@pytest.fixture
def study(queue, protocol, sample_dir, ai_liver, tmp_path):
    made = make_study(queue, protocol, sample_dir, ai_liver, tmp_path)
    yield made
    made.close()


def open_case(desk: Workstation):
    """Claim the next task and wait until its case is in the desk's scene; the session."""
    assert desk.task.next_task(), desk.task.message
    desk.wait_until(lambda: desk.task.session is not None, TIMEOUT_S)
    return desk.task.session


def make_ready(desk: Workstation, reason: str = "kept as it is for this test") -> None:
    """Answer the required question and give a reason for every blocking rule, so Submit is on."""
    assert desk.questions.answer("lung_rads", "1")
    desk.protocol.check_now()
    for row in desk.protocol.state.rows:
        for rule in row.blocking:
            assert desk.protocol.override(row.structure_id, rule.rule, reason)
    desk.wait_until(lambda: desk.task.state.actions["submit"].enabled, TIMEOUT_S)
