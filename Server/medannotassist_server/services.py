"""What every request step needs: settings, the database and the blob store of this process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request

from MedAnnotAssistLib.core.protocol import Protocol

from .blobs import BlobStore
from .db import Database
from .models import Project
from .settings import Settings


@dataclass
class Services:
    settings: Settings
    database: Database
    blobs: BlobStore
    writer: object | None = None  # the server process's group-commit writer (``group_commit.GroupCommit``)

    def write(self, step):
        """``step(session)`` in a write transaction, its result once committed: in the group-commit writer's
        next batch when this process has one (one commit with the claims and heartbeats waiting, no turn of
        its own on SQLite's one writer), else in a transaction of its own."""
        if self.writer is not None:
            return self.writer.write(step)
        with self.database.writing() as session:
            return step(session)


def services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(services)]


@lru_cache(maxsize=64)
def _protocol(text: str) -> Protocol:
    return Protocol.from_json(json.loads(text), source="project")


def protocol_of(project: Project) -> Protocol:
    """The protocol version the project froze (validated when the project was created)."""
    return _protocol(project.protocol_json)
