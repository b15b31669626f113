"""The workstation's settings in Slicer's settings (the user's Slicer.ini), and the token apart from them.

Keys (docs/architecture.md, "The workstation's sections"):

- ``MedAnnotAssist/Workstation``: the JSON of ``WorkstationSettings`` (server URL, CA bundle, user name,
  project, lease and interval seconds, DICOMweb URL, export format); never the token.
- ``MedAnnotAssist/Token``: the queue token, only when the user ticks "Remember the token"; it is never
  logged, shown (the line edit masks it) or put anywhere else.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import slicer

from ..workflow.settings import WorkstationSettings

SETTINGS_KEY = "MedAnnotAssist/Workstation"
TOKEN_KEY = "MedAnnotAssist/Token"
FOLDER = "MedAnnotAssist"

log = logging.getLogger("MedAnnotAssist")


class SettingsStore:
    def __init__(self, settings=None):
        self.settings = settings if settings is not None else slicer.app.userSettings()
        self._saved: str | None = None

    def load(self) -> WorkstationSettings:
        """The stored settings; defaults when there are none or they cannot be read (said in the log)."""
        stored = self.settings.value(SETTINGS_KEY)
        if not stored:
            return WorkstationSettings()
        try:
            loaded = WorkstationSettings.from_json(json.loads(str(stored)))
        except ValueError as error:  # a hand-edited file, or a token someone put there: never echoed
            log.warning("%s in Slicer's settings cannot be used (%s); starting from the defaults", SETTINGS_KEY, error)
            return WorkstationSettings()
        self._saved = json.dumps(loaded.to_json(), sort_keys=True)
        return loaded

    def save(self, settings: WorkstationSettings) -> bool:
        """Write the settings when they changed; True when written."""
        data = json.dumps(settings.to_json(), sort_keys=True)
        if data == self._saved:
            return False
        self.settings.setValue(SETTINGS_KEY, data)
        self.settings.sync()
        self._saved = data
        return True

    def token(self) -> str:
        return str(self.settings.value(TOKEN_KEY) or "")

    def rememberToken(self, token: str | None) -> None:
        """Keep ``token`` for the next session, or forget the one kept (None)."""
        if token:
            self.settings.setValue(TOKEN_KEY, token)
        else:
            self.settings.remove(TOKEN_KEY)
        self.settings.sync()

    def folder(self) -> Path:
        """Where the outbox lives: next to Slicer's settings file (the user's own, not a temporary folder)."""
        return Path(self.settings.fileName()).parent / FOLDER
