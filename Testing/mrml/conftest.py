from __future__ import annotations

import pytest

from MedAnnotAssistLib.mrml.scene import SceneContext


@pytest.fixture
def context() -> SceneContext:
    """A fresh headless Slicer scene on PyPI slicer-core."""
    return SceneContext.headless()
