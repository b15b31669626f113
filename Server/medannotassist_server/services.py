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


def services(request: Request) -> Services:
    return request.app.state.services


Svc = Annotated[Services, Depends(services)]


@lru_cache(maxsize=64)
def _protocol(text: str) -> Protocol:
    return Protocol.from_json(json.loads(text), source="project")


def protocol_of(project: Project) -> Protocol:
    """The protocol version the project froze (validated when the project was created)."""
    return _protocol(project.protocol_json)
