"""The demo accounts of `medannot run`: made once, their tokens kept, a token no longer valid renewed alone."""

from __future__ import annotations

import json
import stat

from medannotassist_server.admin import revoke
from medannotassist_server.settings import Settings
from MedAnnotAssistLib.cli.demo_study import USERS, accounts


def test_tokens_are_kept_between_runs_and_a_revoked_one_is_renewed(tmp_path):
    server_dir, tokens_file = tmp_path / "server", tmp_path / "tokens.json"
    tokens, renewed = accounts(server_dir, tokens_file)
    assert sorted(tokens) == sorted(USERS) and sorted(renewed) == sorted(USERS)
    assert all(token.startswith("mat_") for token in tokens.values())
    assert json.loads(tokens_file.read_text()) == tokens
    assert stat.S_IMODE(tokens_file.stat().st_mode) == 0o600

    assert accounts(server_dir, tokens_file) == (tokens, [])

    assert revoke(Settings(data_dir=server_dir, database_url=""), "annotator1") == 1
    again, renewed = accounts(server_dir, tokens_file)
    assert renewed == ["annotator1"] and again["annotator1"] != tokens["annotator1"]
    assert {k: v for k, v in again.items() if k != "annotator1"} == {
        k: v for k, v in tokens.items() if k != "annotator1"
    }
    assert json.loads(tokens_file.read_text()) == again

    tokens_file.write_text("not json")  # a damaged file: new tokens for everyone, the file rewritten
    fresh, renewed = accounts(server_dir, tokens_file)
    assert sorted(renewed) == sorted(USERS) and json.loads(tokens_file.read_text()) == fresh
