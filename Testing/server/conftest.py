"""Fixtures of the queue server's tests: a real PostgreSQL 15 cluster (created once per session, one new
database per server), the real server process, users and the files they upload."""

from __future__ import annotations

import pytest

from .harness import Api, ServerProcess, create_site_admin, readers_as_seg_nrrd, tiny_image
from .postgres import PostgresCluster, PostgresUnavailableError

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_cluster():
    cluster = PostgresCluster()
    try:
        cluster.start()
    except PostgresUnavailableError as error:
        cluster.stop()
        pytest.skip(f"PostgreSQL 15 is not available: {error}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def database_for(request):
    """``database_for(backend)``: None for SQLite (the server's own file), else a new PostgreSQL database."""

    def make(backend: str) -> str | None:
        if backend == "sqlite":
            return None
        return request.getfixturevalue("postgres_cluster").create_database()

    return make


class Queue:
    """A running server with a site admin; ``replicas`` share its database and data directory."""

    def __init__(self, root, database_url: str | None, *extra: str, replicas: int = 1):
        self.root, self.database_url = root, database_url
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.admin_token = create_site_admin(self.data_dir, database_url)
        self.servers = [ServerProcess(self.data_dir, database_url, None, *extra) for _ in range(replicas)]
        for server in self.servers:
            server.start()
        self.admin = Api(self.url, self.admin_token, "admin")

    @property
    def server(self) -> ServerProcess:
        return self.servers[0]

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.admin.close()
        for server in self.servers:
            server.stop()


@pytest.fixture
def start_queue(tmp_path_factory, database_for):
    """``start_queue(backend, *serve_options, replicas=1)``; every queue started is stopped afterwards."""
    started = []

    def start(backend: str, *extra: str, replicas: int = 1) -> Queue:
        queue = Queue(tmp_path_factory.mktemp(f"queue-{backend}"), database_for(backend), *extra, replicas=replicas)
        started.append(queue)
        return queue

    yield start
    for queue in started:
        queue.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def queue(request, tmp_path_factory, database_for):
    """One server per backend for a whole test module (tests make their own projects and users)."""
    backend = request.param
    instance = Queue(tmp_path_factory.mktemp(f"queue-{backend}"), database_for(backend), "--max-upload-mb", "4")
    instance.backend = backend
    yield instance
    instance.stop()


@pytest.fixture(scope="session")
def reader_files(sample_dir, tmp_path_factory) -> list:
    return readers_as_seg_nrrd(sample_dir, tmp_path_factory.mktemp("readers"))


@pytest.fixture(scope="session")
def tiny_image_file(tmp_path_factory):
    return tiny_image(tmp_path_factory.mktemp("tiny") / "tiny.nrrd")
