"""The FastAPI application: ``create_app(settings)``; ``serve`` migrates, reconciles and runs uvicorn."""

from __future__ import annotations

import gc
import logging
import os
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI

from . import __version__, audit, docs_pages, errors, worker
from .access_log import uvicorn_log_config
from .blobs import BlobStore
from .db import Database, migrate
from .group_commit import GroupCommit
from .jsonlimits import JsonBodyLimits
from .routes import cases, jobs, projects, system, tasks
from .services import Services
from .settings import Settings, private_data_dir

log = logging.getLogger("medannotassist_server")

DESCRIPTION = """MedAnnotAssist's task queue: projects with a frozen protocol, blind multi-reader annotate
tasks with leases, review, an audit chain and exports. Every endpoint except `/api/v1/health` needs
`Authorization: Bearer <token>`. Errors are JSON `{"code", "message", ...}`. See docs/queue-api.md."""


@asynccontextmanager
async def _lifespan(app: FastAPI):
    try:
        async with worker.lifespan(app):  # this process's consensus job threads
            # what exists now lives as long as the process: left to the collector, every full collection
            # walks it again (190,000 objects: 100 ms pauses, every request waiting; bench/queue.py measured)
            gc.freeze()
            yield
    finally:
        app.state.writer.close()  # answers what is queued; relaxed commits made durable
    # on shutdown, after the job threads stopped: the newest rows this process committed get their checkpoint
    chain = app.state.services.database.chain
    if chain is not None:
        chain.flush()


def create_app(settings: Settings, database: Database | None = None) -> FastAPI:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = database or Database(settings.url, audit.AuditChain.from_settings(settings))
    blobs = BlobStore(settings.blob_dir)
    app = FastAPI(
        title="MedAnnotAssist task queue",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        lifespan=_lifespan,
    )
    docs_pages.install(app)
    app.state.writer = GroupCommit(database, settings.durability, settings.batch_max, settings.batch_wait_ms)
    app.state.services = Services(settings, database, blobs, app.state.writer)
    errors.install(app)
    app.add_middleware(JsonBodyLimits)  # inside the upload limit: that one counts the bytes first
    app.add_middleware(errors.UploadLimit, limit=settings.max_upload_bytes)
    # routes are tried in order: the tasks router (claim, heartbeat, release: the busiest paths) first; no
    # path of it matches a route of the others, so the order changes nothing else
    for module in (tasks, system, projects, cases, jobs):
        app.include_router(module.router)
    return app


def prepare(settings: Settings) -> Services:
    """Migrate to head, bind the audit key (made on the first start), clear old stray uploads and queue the
    consensus of cases a crash left unqueued."""
    from .consensus_step import reconcile

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.url)
    services = Services(
        settings, Database(settings.url, audit.AuditChain.from_settings(settings)), BlobStore(settings.blob_dir)
    )
    audit.bind_key(services.database)
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
    warning = settings.remote_warning()  # RemoteHostRefusedError before anything is touched
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    private_data_dir(settings)
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
    options["log_config"] = uvicorn_log_config()
    if settings.workers > 1:
        settings.data_dir = settings.data_dir.resolve()
        settings.audit_key_file = str(settings.audit_key_path.resolve())
        settings.audit_checkpoint_file = str(settings.audit_checkpoint_path.resolve())
        os.environ.update(settings.environment())
        uvicorn.run(f"{__name__}:worker_app", factory=True, workers=settings.workers, **options)
        return
    uvicorn.run(create_app(settings), **options)
