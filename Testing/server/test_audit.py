"""The audit chain resists rewriting, on SQLite and PostgreSQL: ``medannot admin verify-audit`` exits 1
naming what is wrong for each way someone with database access (but not the server's audit key) could
rewrite it, and exits 2 with a clear error when the key itself is missing or wrong.

The four ways: (1) cut rows from the end and move ``audit_head`` back; (2) delete every row and reset the
head to the start; (3) edit a row and re-hash every row after it; (4) do (1) and also truncate or edit the
checkpoint file, or delete it."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from medannotassist_server import admin
from medannotassist_server.db import make_engine
from medannotassist_server.settings import Settings
from MedAnnotAssistLib.cli import main as cli_main

from .conftest import BACKENDS

GENESIS = "0" * 64
ROWS = 10


@pytest.fixture(params=BACKENDS)
def site(request, database_for, tmp_path) -> Settings:
    """A server's data: ten users made with ``medannot admin``'s functions, one audit row each."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_for(request.param) or "")
    for index in range(1, ROWS + 1):
        admin.add_user(settings, f"user{index:02d}", None, False, None)
    return settings


@pytest.fixture
def medannot(capsys):
    """``medannot ARGS`` in this process (what the command prints, and its exit status)."""

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        status = cli_main(list(args))
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=status, stdout=captured.out, stderr=captured.err)

    return run


@pytest.fixture
def verify(medannot):
    def run(settings: Settings, *args: str, command: str = "verify-audit") -> SimpleNamespace:
        location = ["--data-dir", str(settings.data_dir)]
        location += ["--database-url", settings.database_url] if settings.database_url else []
        return medannot("admin", command, *args, *location)

    return run


def _sql(settings: Settings, statement: str, **params) -> list:
    engine = make_engine(settings.url)
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return result.all() if result.returns_rows else []
    finally:
        engine.dispose()


def _rows(settings: Settings) -> list:
    return _sql(settings, "SELECT * FROM audit_events ORDER BY seq")


def _move_head(settings: Settings, seq: int) -> None:
    """What an attacker does after cutting rows: the head names the new last row."""
    rows = _sql(settings, "SELECT hash FROM audit_events WHERE seq = :seq", seq=seq)
    _sql(settings, "UPDATE audit_head SET seq = :seq, hash = :hash", seq=seq, hash=rows[0][0] if rows else GENESIS)


def _cut_after(settings: Settings, seq: int) -> None:
    _sql(settings, "DELETE FROM audit_events WHERE seq > :seq", seq=seq)
    _move_head(settings, seq)


def _sha256(text_: str) -> str:
    return hashlib.sha256(text_.encode("utf-8")).hexdigest()


def _hmac_with(key: bytes):
    return lambda text_: hmac.new(key, text_.encode("utf-8"), hashlib.sha256).hexdigest()


def _rehash_from(settings: Settings, first: int, hasher) -> None:
    """Re-hash row ``first`` and every row after it, and move the head: all that database access allows."""
    previous = None
    for row in _rows(settings):
        if row.seq < first:
            previous = row.hash
            continue
        fields = [row.seq, row.at, row.actor, row.action, row.entity, row.entity_id, row.project_id]
        fields += [row.before_json, row.after_json, previous or GENESIS]
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        previous = hasher(canonical)
        _sql(
            settings,
            "UPDATE audit_events SET prev_hash = :prev, hash = :hash WHERE seq = :seq",
            prev=fields[-1],
            hash=previous,
            seq=row.seq,
        )
    _sql(settings, "UPDATE audit_head SET hash = :hash", hash=previous)


def _checkpoint_file(settings: Settings):
    return settings.data_dir / "audit-checkpoints.jsonl"


def _keep_checkpoints(settings: Settings, keep) -> None:
    """Rewrite the checkpoint file with only the lines ``keep`` accepts (the attacker can read them)."""
    path = _checkpoint_file(settings)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if keep(json.loads(line))))


def _failed(result, *expected: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    for part in expected:
        assert part in result.stderr, (part, result.stderr)


def test_an_intact_chain_verifies(site, verify):
    result = verify(site)
    assert result.returncode == 0, result.stderr
    assert f"audit chain ok: {ROWS} rows" in result.stdout and "signed checkpoints" in result.stdout


# (1) cut the tail and move audit_head to the new last row
def test_rows_cut_from_the_end_with_the_head_moved(site, verify):
    _cut_after(site, 6)
    _failed(verify(site), f"rows 7 to {ROWS} were deleted from the end of the chain", "but the chain ends at row 6")


# (2) delete every row and reset the head to genesis
def test_every_row_deleted_and_the_head_reset(site, verify):
    _sql(site, "DELETE FROM audit_events")
    _move_head(site, 0)
    _failed(verify(site), f"rows 1 to {ROWS} were deleted from the end of the chain", "the chain ends at row 0")


# (3) edit a row and recompute every hash after it, without the key: with SHA-256 (the old chain's hash),
# with a guessed key, and after moving the boundary of the unkeyed rows so that SHA-256 would pass
@pytest.mark.parametrize("attack", ["sha256", "guessed key", "boundary moved"])
def test_a_row_edited_and_every_hash_after_it_recomputed(site, attack, verify):
    _sql(site, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 4")
    if attack == "boundary moved":
        _sql(site, "UPDATE audit_head SET keyed_from = :after", after=ROWS + 1)
        _rehash_from(site, 1, _sha256)
        _failed(
            verify(site),
            "audit row 1 does not match",
            "the chain was rewritten up to row 1",
            f"audit_head.keyed_from is {ROWS + 1} but",
            "the boundary of the unkeyed rows was moved in the database",
        )
        return
    _rehash_from(site, 4, _sha256 if attack == "sha256" else _hmac_with(secrets.token_bytes(32)))
    _failed(verify(site), "audit row 4: modified (its hash does not match its content)")


# (4) rows cut and the checkpoint file truncated to match, or edited, or deleted
def test_a_truncated_checkpoint_file_is_caught_by_an_exported_checkpoint(site, tmp_path, verify):
    exported = verify(site, command="export-audit-checkpoint")
    assert exported.returncode == 0, exported.stderr
    anchor = tmp_path / "kept-elsewhere.jsonl"
    anchor.write_text(exported.stdout)
    assert json.loads(exported.stdout)["seq"] == ROWS
    assert verify(site, "--anchor", str(anchor)).returncode == 0

    _cut_after(site, 6)
    _keep_checkpoints(site, lambda checkpoint: checkpoint["seq"] <= 6)
    _failed(
        verify(site, "--anchor", str(anchor)),
        f"rows 7 to {ROWS} were deleted from the end of the chain: {anchor} line 1 is a checkpoint of row {ROWS}",
        "the checkpoint file was truncated or rewritten",
    )


def test_an_edited_checkpoint_file_shows_in_its_signatures(site, verify):
    _cut_after(site, 6)
    path = _checkpoint_file(site)
    lines = path.read_text().splitlines()
    forged = []
    for line in lines:  # the newest checkpoints now claim the chain ended at row 6
        checkpoint = json.loads(line)
        if checkpoint["seq"] > 6:
            checkpoint["seq"] = 6
            checkpoint["head"] = _rows(site)[-1].hash
        forged.append(json.dumps(checkpoint, sort_keys=True, separators=(",", ":")))
    path.write_text("\n".join(forged) + "\n")
    _failed(verify(site), f"{path} line {len(lines)}: its signature does not match its content")


def test_a_deleted_checkpoint_file_shows(site, verify):
    _cut_after(site, 6)
    _checkpoint_file(site).unlink()
    _failed(verify(site), "holds no signed checkpoint although the chain is bound to key id")


def test_a_checkpoint_file_without_its_first_lines_shows(site, verify):
    _cut_after(site, 6)
    _keep_checkpoints(site, lambda checkpoint: 0 < checkpoint["seq"] <= 6)
    _failed(verify(site), "has lost its seal")


def test_a_deleted_row_is_named(site, verify):
    _sql(site, "DELETE FROM audit_events WHERE seq = 4")
    _failed(verify(site), "audit row 4 is missing (deleted); the next row is 5")


# a missing or wrong key is a setup error (exit 2), not tampering
def test_a_missing_key_is_a_clear_error(site, verify):
    (site.data_dir / "audit.key").unlink()
    result = verify(site)
    assert result.returncode == 2, result.stderr
    assert f"no audit key at {site.data_dir / 'audit.key'}" in result.stderr and "key id" in result.stderr
    assert not (site.data_dir / "audit.key").exists()  # never replaced by a new key


def test_a_wrong_key_is_a_clear_error(site, tmp_path, verify):
    other = tmp_path / "other.key"
    other.write_text(secrets.token_hex(32) + "\n")
    other.chmod(0o600)
    result = verify(site, "--audit-key-file", str(other))
    assert result.returncode == 2, result.stderr
    assert "is not the key this audit chain was made with" in result.stderr


def test_a_key_open_to_other_users_is_refused(site, verify):
    key = site.data_dir / "audit.key"
    assert key.stat().st_mode & 0o777 == 0o600 and _checkpoint_file(site).stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    result = verify(site)
    assert result.returncode == 2 and f"chmod 600 {key}" in result.stderr, result.stderr


def test_the_key_and_checkpoints_can_live_elsewhere(tmp_path, monkeypatch, verify):
    outside = tmp_path / "outside"
    settings = Settings(
        data_dir=tmp_path / "data",
        audit_key_file=str(outside / "medannot.key"),
        audit_checkpoint_file=str(outside / "checkpoints.jsonl"),
    )
    admin.add_user(settings, "alice", None, True, None)
    assert (outside / "medannot.key").is_file() and (outside / "checkpoints.jsonl").is_file()
    assert not (settings.data_dir / "audit.key").exists()
    monkeypatch.setenv("MEDANNOT_AUDIT_KEY_FILE", str(outside / "medannot.key"))
    monkeypatch.setenv("MEDANNOT_AUDIT_CHECKPOINT_FILE", str(outside / "checkpoints.jsonl"))
    result = verify(settings)
    assert result.returncode == 0 and "audit chain ok: 1 rows" in result.stdout, result.stderr
