"""Fixtures of the queue client's tests: the real server (Testing/server's harness), a project with two
annotators and a reviewer, and a case on the tiny image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from MedAnnotAssistLib.core.queue_client import QueueClient
from Testing.server import conftest as server
from Testing.server.conftest import Queue
from Testing.server.harness import Api, tiny_segmentation, unique

# the server tests' fixtures: PostgreSQL, started queues, the tiny image
postgres_cluster, database_for = server.postgres_cluster, server.database_for
start_queue, tiny_image_file = server.start_queue, server.tiny_image_file


@pytest.fixture(scope="module")
def sqlite_queue(tmp_path_factory):
    """One SQLite server for a whole test module (each test makes its own project and users)."""
    instance = Queue(tmp_path_factory.mktemp("queue-sqlite"), None)
    yield instance
    instance.stop()


@dataclass
class Study:
    """A project (abdominal-organs, two readers, review on) with one case; annotators ``a`` and ``b``, a
    reviewer; ``Api`` objects talk to the server directly (what the server holds), ``client`` makes ours."""

    queue: Queue
    project_id: int
    case_id: int
    admin: Api
    a: Api
    b: Api
    reviewer: Api
    folder: Path

    def client(self, who: Api, **options) -> QueueClient:
        options.setdefault("backoff_s", 0.01)
        return QueueClient(self.queue.url, who.token, **options)

    def segmentation(self, name: str, tag: str = "") -> Path:
        """A small .seg.nrrd on the case image's grid (a liver box), unique bytes per ``tag``."""
        return tiny_segmentation(self.folder / f"{name}.seg.nrrd", tag=tag or name)

    def submissions_on_server(self) -> list[dict]:
        """Every submission of the case, as the site admin (no reader of it) sees them."""
        return self.admin.ok(self.admin.get(f"/api/v1/projects/{self.project_id}/cases/{self.case_id}/submissions"))


def make_study(queue: Queue, image: Path, folder: Path) -> Study:
    admin = queue.admin
    project_id = admin.new_project(unique("client"), readers=2)
    users = {}
    for role, name in (("annotator", "a"), ("annotator", "b"), ("reviewer", "reviewer")):
        users[name] = admin.new_user(unique(name))
        admin.set_roles(project_id, users[name].name, role)
    case = admin.upload_case(project_id, image, unique("case"))
    folder.mkdir(parents=True, exist_ok=True)
    return Study(queue, project_id, case["id"], admin, users["a"], users["b"], users["reviewer"], folder)


@pytest.fixture
def study(sqlite_queue, tiny_image_file, tmp_path) -> Study:
    return make_study(sqlite_queue, tiny_image_file, tmp_path / "files")
