"""The append-only audit log: every state change with who, what, when, before and after.

Each row's hash is an HMAC, with the server's audit key (kept outside the database, see ``audit_keys``),
over its own fields and the previous row's hash: editing or deleting any row breaks the chain from there
on, and without the key nobody can re-hash the rows after an edit. Events are collected during a write
transaction and appended at its end, after the row ``audit_head`` is locked: appends from replicas are
serialized into one order. Signed checkpoints (row N had hash H) in a file outside the database show rows
cut from the end, or the whole chain deleted, up to the last checkpoint; an exported checkpoint held
elsewhere shows it beyond that file too. Rows made before revision 0004 (``keyed_from``) keep their
unkeyed SHA-256 hashes; the checkpoint signed when the key was bound seals them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from .audit_keys import AuditChain, AuditKeyError, Checkpoint, CheckpointLine, create_key, read_checkpoint_lines
from .models import AuditEvent, AuditHead

GENESIS = "0" * 64
_PENDING = "audit_pending"


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def record(
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id,
    before: dict | None,
    after: dict | None,
    project_id: int | None = None,
) -> None:
    """Queue an event; it is written when the surrounding ``Database.writing()`` block commits."""
    session.info.setdefault(_PENDING, []).append(
        (actor, action, entity, str(entity_id), project_id, canonical(before or {}), canonical(after or {}))
    )


def hashed_text(row) -> str:
    """What a row's hash covers (``row``: an AuditEvent or a namespace): its fields and the previous hash."""
    fields = [
        row.seq,
        row.at,
        row.actor,
        row.action,
        row.entity,
        row.entity_id,
        row.project_id,
        row.before_json,
        row.after_json,
        row.prev_hash,
    ]
    return canonical(fields)


def unkeyed_row_hash(row) -> str:
    """SHA-256 of a row made before the chain was keyed (before revision 0004)."""
    return hashlib.sha256(hashed_text(row).encode("utf-8")).hexdigest()


# plain Core on the tables, not the ORM's bulk path: about 0.6 ms less per append, and the head row's lock
# (which serializes every audited write) is held that much shorter
_EVENTS, _HEADS = AuditEvent.__table__, AuditHead.__table__
_HEAD = (
    select(_HEADS.c.seq, _HEADS.c.hash, _HEADS.c.keyed_from, _HEADS.c.key_id).where(_HEADS.c.id == 1).with_for_update()
)
_INSERT = insert(_EVENTS)
_MOVE_HEAD = update(_HEADS).where(_HEADS.c.id == 1)


def write_pending(session: Session, chain: AuditChain | None) -> tuple[int, str, int] | None:
    """Append the queued events after the last row (Core statements: this runs in every write); the new
    head (seq, hash, keyed_from) for the checkpoints once committed, or None if there was nothing."""
    pending = session.info.pop(_PENDING, [])
    if not pending:
        return None
    if chain is None:
        raise AuditKeyError("audit events need the audit key: Database(url, AuditChain.from_settings(settings))")
    connection = session.connection()
    seq, previous, keyed_from, key_id = connection.execute(_HEAD).one()
    if key_id != chain.key_id:
        # a replica with another key would fork the chain into rows nobody can verify with one key
        raise AuditKeyError(_wrong_key(chain, key_id))
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows = []
    for actor, action, entity, entity_id, project_id, before, after in pending:
        seq += 1
        row = SimpleNamespace(
            seq=seq,
            at=at,
            actor=actor,
            action=action,
            entity=entity,
            entity_id=entity_id,
            project_id=project_id,
            before_json=before,
            after_json=after,
            prev_hash=previous,
        )
        row.hash = previous = chain.row_hash(hashed_text(row))
        rows.append(vars(row))
    connection.execute(_INSERT, rows)
    connection.execute(_MOVE_HEAD.values(seq=seq, hash=previous))
    return seq, previous, keyed_from


def _wrong_key(chain: AuditChain, chain_key_id: str | None) -> str:
    return (
        f"the audit key {chain.key_path} (key id {chain.key_id}) is not the key this audit chain was made with "
        f"(key id {chain_key_id}): point --audit-key-file (MEDANNOT_AUDIT_KEY_FILE) at the chain's key"
    )


def bind_key(database) -> None:
    """On every start: make the key if the chain has none yet, bind it to the chain and sign the seal
    checkpoint (once per chain); refuse a missing key or another key with ``AuditKeyError``."""
    chain: AuditChain = database.chain
    if not chain.key_path.exists():
        with database.reading() as session:
            head = session.get(AuditHead, 1)
            key_id = head.key_id if head is not None else None
        if key_id is not None:
            raise AuditKeyError(
                f"no audit key at {chain.key_path}, but the audit chain was made with key id {key_id}: restore the "
                "key file from the data directory's backup, or point --audit-key-file (MEDANNOT_AUDIT_KEY_FILE) at it"
            )
        signers = _File.read(chain.checkpoint_path).signers()
        if signers:
            raise AuditKeyError(
                f"no audit key at {chain.key_path}, but {chain.checkpoint_path} holds checkpoints signed with key id "
                f"{', '.join(sorted(signers))}: restore the key file from the data directory's backup"
            )
        create_key(chain.key_path)
    with database.writing() as session:
        connection = session.connection()
        row = connection.execute(_HEAD).one_or_none()
        if row is None:
            return  # the head row was deleted: verify says so, and nothing can be appended
        seq, head, keyed_from, key_id = row
        if key_id is None:
            # the seal goes to the file before the binding commits, while the head is locked: a bound
            # chain always has one (a failed commit leaves a true, harmless extra seal)
            chain.append(chain.sign(seq, head, keyed_from, seal=True), sync=True)
            connection.execute(_MOVE_HEAD.values(key_id=chain.key_id))
        elif key_id != chain.key_id:
            raise AuditKeyError(_wrong_key(chain, key_id))


@dataclass
class AuditVerdict:
    ok: bool
    rows: int
    message: str
    bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    key_problem: bool = False  # the key is missing or wrong: nothing could be checked
    head: tuple[int, str, int] | None = None  # (seq, hash, keyed_from) verified, for a checkpoint on demand
    checkpoints: int = 0


@dataclass
class _Signed:
    source: str  # "PATH line N"
    checkpoint: Checkpoint


@dataclass
class _File:
    path: Path
    lines: list[CheckpointLine]
    torn: bool

    @classmethod
    def read(cls, path: Path) -> _File:
        return cls(Path(path), *read_checkpoint_lines(Path(path)))

    def signers(self) -> set[str]:
        return {line.checkpoint.key for line in self.lines if line.checkpoint}

    def signed(self, chain: AuditChain, problems: list[str], notes: list[str]) -> list[_Signed]:
        """The checkpoints whose signatures hold; every other line is a problem."""
        if self.torn:
            notes.append(f"the last line of {self.path} is torn (a crash while writing?) and was skipped")
        signed = []
        for line in self.lines:
            where = f"{self.path} line {line.number}"
            checkpoint = line.checkpoint
            if checkpoint is None:
                problems.append(f"{where} is not a checkpoint ({line.problem}): the file was edited")
            elif checkpoint.key != chain.key_id:
                problems.append(f"{where} is signed with another key (key id {checkpoint.key}): the file was edited")
            elif not chain.signature_holds(checkpoint):
                problems.append(f"{where}: its signature does not match its content: the file was edited")
            else:
                signed.append(_Signed(where, checkpoint))
        return signed


def _key_problem(chain: AuditChain, head: AuditHead, file: _File) -> str | None:
    try:
        chain.key  # noqa: B018 (reads the key)
    except AuditKeyError as error:
        made_with = f"; the chain was made with key id {head.key_id}" if head.key_id else ""
        return f"{error}{made_with}: the chain cannot be verified without its key"
    if head.key_id is not None and head.key_id != chain.key_id:
        return _wrong_key(chain, head.key_id)
    signers = file.signers()
    if head.key_id is None and signers and chain.key_id not in signers:
        return _wrong_key(chain, ", ".join(sorted(signers)))
    return None


def verify(session: Session, chain: AuditChain, anchors: Iterable[Path] = ()) -> AuditVerdict:
    """Walk the chain in order, naming the first row that does not fit, then hold it against every signed
    checkpoint of the checkpoint file and of ``anchors`` (checkpoints exported earlier and kept elsewhere)."""
    # the files before the database (whose snapshot starts at the first read): a checkpoint is written after
    # its rows commit, so lines and rows added meanwhile agree and only tampering shows
    file = _File.read(chain.checkpoint_path)
    anchor_files = [_File.read(path) for path in anchors]
    head = session.get(AuditHead, 1)
    if head is None:
        problem = "the audit_head row is missing: deleted in the database"
        return AuditVerdict(False, 0, problem, problems=[problem])
    key_problem = _key_problem(chain, head, file)
    if key_problem:
        return AuditVerdict(False, 0, key_problem, problems=[key_problem], key_problem=True)
    problems: list[str] = []
    notes: list[str] = []
    signed = file.signed(chain, problems, notes)
    exported = [item for anchor in anchor_files for item in anchor.signed(chain, problems, notes)]
    _check_file(chain, head, signed, problems)
    everything = signed + exported
    moved = next((item for item in everything if item.checkpoint.keyed_from != head.keyed_from), None)
    if moved is not None:
        problems.append(
            f"audit_head.keyed_from is {head.keyed_from} but {moved.source} signed {moved.checkpoint.keyed_from}: "
            "the boundary of the unkeyed rows was moved in the database"
        )
    in_file = {item.checkpoint.sig for item in signed}
    for item in exported:
        if item.checkpoint.sig not in in_file:
            problems.append(
                f"the exported checkpoint of row {item.checkpoint.seq} ({item.source}, signed {item.checkpoint.at}) "
                f"is not in {chain.checkpoint_path}: the checkpoint file was truncated or rewritten"
            )
    rows, last, last_hash, bad_seq, chain_problems = _walk(session, chain, head, everything)
    problems = chain_problems + problems
    if problems:
        return AuditVerdict(False, rows, problems[0], bad_seq, problems, checkpoints=len(everything))
    newest = max(everything, key=lambda item: item.checkpoint.seq, default=None)
    message = f"audit chain ok: {rows} rows, head {last_hash[:16]}, {len(everything)} signed checkpoints"
    if newest is not None:
        message += f" (newest: row {newest.checkpoint.seq}, {newest.checkpoint.at})"
    if head.keyed_from > 1:
        message += f"; rows 1 to {head.keyed_from - 1} were made before the chain was keyed (SHA-256, sealed)"
    message = "; ".join([message, *notes])
    return AuditVerdict(True, rows, message, head=(last, last_hash, head.keyed_from), checkpoints=len(everything))


def _check_file(chain: AuditChain, head: AuditHead, signed: list[_Signed], problems: list[str]) -> None:
    if head.key_id is None:
        if signed:
            problems.append(
                f"audit_head has lost its key binding (key_id is empty) but {chain.checkpoint_path} holds "
                "checkpoints: changed in the database"
            )
        return
    if not signed:
        problems.append(
            f"{chain.checkpoint_path} holds no signed checkpoint although the chain is bound to key id "
            f"{head.key_id}: the checkpoint file was deleted, emptied or replaced"
        )
    elif not any(item.checkpoint.seal for item in signed):
        problems.append(
            f"{chain.checkpoint_path} has lost its seal (the checkpoint signed when the key was bound): its first "
            "lines were removed, or the file was replaced"
        )


def _walk(session: Session, chain: AuditChain, head: AuditHead, checkpoints: list[_Signed]):
    """The chain's rows up to the head, in order, held against the checkpoints: (rows, last seq, last hash,
    first bad seq, problems); the walk stops at the first problem."""
    wanted: dict[int, list[_Signed]] = {}
    for item in checkpoints:
        wanted.setdefault(item.checkpoint.seq, []).append(item)
    expected_seq, previous, rows = 1, GENESIS, 0
    problem = _hold(wanted.pop(0, []), 0, GENESIS)
    if problem:
        return rows, 0, previous, 0, [problem]
    query = select(AuditEvent).where(AuditEvent.seq <= head.seq).order_by(AuditEvent.seq)
    for row in session.execute(query.execution_options(yield_per=2000)).scalars():
        rows += 1
        if row.seq != expected_seq:
            problem = f"audit row {expected_seq} is missing (deleted); the next row is {row.seq}"
            return rows, expected_seq - 1, previous, expected_seq, [problem]
        if row.prev_hash != previous:
            problem = f"audit row {row.seq}: its previous-hash does not match row {row.seq - 1}"
            return rows, row.seq, previous, row.seq, [problem]
        keyed = row.seq >= head.keyed_from
        if (chain.row_hash(hashed_text(row)) if keyed else unkeyed_row_hash(row)) != row.hash:
            problem = f"audit row {row.seq}: modified (its hash does not match its content)"
            return rows, row.seq, previous, row.seq, [problem]
        previous, expected_seq = row.hash, row.seq + 1
        problem = _hold(wanted.pop(row.seq, []), row.seq, row.hash)
        if problem:
            return rows, row.seq, previous, row.seq, [problem]
    last = expected_seq - 1
    if head.seq != last or head.hash != previous:
        problem = f"audit head records row {head.seq} but the chain ends at row {last}: rows deleted"
        return rows, last, previous, last + 1, [problem]
    if wanted:
        # every checkpoint left is of a row after the end: the newest one shows how many rows were cut
        seq = max(wanted)
        item = wanted[seq][0]
        problem = (
            f"rows {last + 1} to {seq} were deleted from the end of the chain: {item.source} is a checkpoint of row "
            f"{seq} (signed {item.checkpoint.at}) but the chain ends at row {last}"
        )
        return rows, last, previous, last + 1, [problem]
    return rows, last, previous, None, []


def _hold(items: list[_Signed], seq: int, row_hash: str) -> str | None:
    for item in items:
        if item.checkpoint.head != row_hash:
            return (
                f"audit row {seq} does not match {item.source} (signed {item.checkpoint.at}): the chain was "
                f"rewritten up to row {seq}"
            )
    return None


def checkpoint_now(database, anchors: Iterable[Path] = ()) -> tuple[AuditVerdict, Checkpoint | None]:
    """On demand: verify the chain, then sign and append a checkpoint of the verified head (to export)."""
    with database.reading() as session:
        verdict = verify(session, database.chain, anchors)
    if not verdict.ok:
        return verdict, None
    seq, head, keyed_from = verdict.head
    checkpoint = database.chain.sign(seq, head, keyed_from)
    database.chain.append(checkpoint, sync=True)
    return verdict, checkpoint
