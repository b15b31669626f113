"""The FastAPI application: ``create_app(settings)``; ``serve`` migrates, reconciles and runs uvicorn."""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI

from . import __version__, errors, worker
from .blobs import BlobStore
from .db import Database, migrate
from .routes import cases, jobs, projects, system, tasks
from .services import Services
from .settings import Settings

log = logging.getLogger("medannotassist_server")

DESCRIPTION = """MedAnnotAssist's task queue: projects with a frozen protocol, blind multi-reader annotate
tasks with leases, review, an audit chain and exports. Every endpoint except `/api/v1/health` needs
`Authorization: Bearer <token>`. Errors are JSON `{"code", "message", ...}`. See docs/queue-api.md."""


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = database or Database(settings.url)
    blobs = BlobStore(settings.blob_dir)
    app = FastAPI(
        title="MedAnnotAssist task queue", version=__version__, description=DESCRIPTION, lifespan=worker.lifespan
    )
    app.state.services = Services(settings, database, blobs)
    errors.install(app)
    app.add_middleware(errors.UploadLimit, limit=settings.max_upload_bytes)
    # routes are tried in order: the tasks router (claim, heartbeat, release: the busiest paths) first; no
    # path of it matches a route of the others, so the order changes nothing else
    for module in (tasks, system, projects, cases, jobs):
        app.include_router(module.router)
    return app


def prepare(settings: Settings) -> Services:
    """Migrate to head, clear old stray uploads and queue the consensus of cases a crash left unqueued."""
    from .consensus_step import reconcile

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.url)
    services = Services(settings, Database(settings.url), BlobStore(settings.blob_dir))
    services.blobs.clean_temporary()
    finished = reconcile(services)
    if finished:
        log.info("queued the consensus of %d case(s) whose readers were all in", finished)
    services.database.dispose()
    return services


def worker_app() -> FastAPI:
    """The app of one of several uvicorn worker processes: settings from the ``MEDANNOT_*`` variables that
    ``serve`` set; the database was migrated and reconciled once, by ``serve``, before the workers started."""
    return create_app(Settings())


def serve(settings: Settings) -> None:
    """Migrate and reconcile once, then run uvicorn: in this process, or in ``settings.workers`` worker
    processes sharing the socket. Workers hold no state of their own (each its own engine; the database
    and the blob store are shared, as between replicas). Stop them with SIGTERM or SIGINT to this process;
    a SIGKILL reaches this process only, so kill the process group instead."""
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare(settings)
    database = "sqlite" if settings.url.startswith("sqlite") else "postgresql"
    log.info(
        "serving on http://%s:%d (database: %s, %d worker process%s)",
        settings.host,
        settings.port,
        database,
        settings.workers,
        "" if settings.workers == 1 else "es",
    )
    options = {"host": settings.host, "port": settings.port, "log_level": settings.log_level, "timeout_keep_alive": 30}
    if settings.workers > 1:
        settings.data_dir = settings.data_dir.resolve()
        os.environ.update(settings.environment())
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers, **options)
        return
    uvicorn.run(create_app(settings), **options)
