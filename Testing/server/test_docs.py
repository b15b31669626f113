"""docs/queue-api.md covers every path of the OpenAPI document and every error code the server raises."""

from __future__ import annotations

import re
from pathlib import Path

from medannotassist_server.app import create_app
from medannotassist_server.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "queue-api.md"
SERVER = REPO / "Server" / "medannotassist_server"


def test_every_path_is_documented(tmp_path):
    spec = create_app(Settings(data_dir=tmp_path)).openapi()
    text = DOC.read_text()
    missing = [path for path in spec["paths"] if f"`{path}`" not in text]
    assert missing == []


def test_every_error_code_is_documented():
    source = "\n".join(path.read_text() for path in SERVER.rglob("*.py"))
    codes = set(re.findall(r'ApiError\(\s*\d{3},\s*"([a-z_]+)"', source))
    codes |= set(re.findall(r'"code": "([a-z_]+)"', source))
    codes |= {f"{what}_not_found" for what in re.findall(r'not_found\("([a-z_]+)"', source)}
    assert len(codes) > 30
    text = DOC.read_text()
    assert sorted(code for code in codes if f"`{code}`" not in text) == []
