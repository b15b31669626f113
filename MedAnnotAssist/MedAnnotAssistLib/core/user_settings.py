"""The user's settings folder: where the de-identification key, the queue outbox and the image cache live
unless told otherwise (Slicer passes its own settings folder instead)."""

from __future__ import annotations

import os
from pathlib import Path

APP_FOLDER = "medannotassist"


def settings_folder() -> Path:
    """``$MEDANNOT_CONFIG_DIR/medannotassist``, else ``$XDG_CONFIG_HOME/medannotassist`` (``~/.config`` when
    unset). Not created here: whoever writes into it does."""
    base = os.environ.get("MEDANNOT_CONFIG_DIR") or os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / APP_FOLDER


def cache_folder() -> Path:
    """``$MEDANNOT_CACHE_DIR/medannotassist``, else ``$XDG_CACHE_HOME/medannotassist`` (``~/.cache`` when unset):
    downloads that can be fetched again (the queue's images), kept out of backups of the settings."""
    base = os.environ.get("MEDANNOT_CACHE_DIR") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / APP_FOLDER
