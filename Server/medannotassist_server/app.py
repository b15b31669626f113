"""The FastAPI application: ``create_app(settings)``; ``serve`` migrates, reconciles and runs uvicorn."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from . import __version__, errors
from .blobs import BlobStore
from .db import Database, migrate
from .routes import cases, projects, system, tasks
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
    app = FastAPI(title="MedAnnotAssist task queue", version=__version__, description=DESCRIPTION)
    app.state.services = Services(settings, database, blobs)
    errors.install(app)
    app.add_middleware(errors.UploadLimit, limit=settings.max_upload_bytes)
    for module in (system, projects, cases, tasks):
        app.include_router(module.router)
    return app


def prepare(settings: Settings) -> Services:
    """Migrate to head, clear old stray uploads and finish cases a crash left between steps."""
    from .consensus_step import reconcile

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.url)
    services = Services(settings, Database(settings.url), BlobStore(settings.blob_dir))
    services.blobs.clean_temporary()
    finished = reconcile(services)
    if finished:
        log.info("reconciled %d case(s) whose readers were all in", finished)
    services.database.dispose()
    return services


def serve(settings: Settings) -> None:
    import uvicorn

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    prepare(settings)
    app = create_app(settings)
    log.info(
        "serving on http://%s:%d (database: %s)",
        settings.host,
        settings.port,
        app.state.services.database.engine.dialect.name,
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_keep_alive=30)
