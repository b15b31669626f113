"""The append-only audit log: every state change with who, what, when, before and after.

Each row's hash is an HMAC, with the server's audit key (kept outside the database, see ``audit_keys``),
over its own fields and the previous row's hash: editing or deleting any row breaks the chain from there
on, and without the key nobody can re-hash the rows after an edit. There is one chain per project (its
head in ``audit_project_heads``) and a server-wide chain 0 (``audit_head``: events without a project, and
every event made before revision 0006). Events are collected during a write transaction and appended at
its end, after the heads of their chains are locked, in chain order: appends from replicas are serialized
per chain, so one project's writes never wait on another's. Signed checkpoints (row N of chain C had hash
H) in a file outside the database show rows cut from the end, or a whole chain deleted, up to the last
checkpoint; an exported checkpoint held elsewhere shows it beyond that file too. Rows made before
revision 0004 (``keyed_from``) keep their unkeyed SHA-256 hashes; the checkpoint signed when the key was
bound seals them. Verification is in ``audit_verify``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .audit_keys import AuditChain, AuditKeyError, Checkpoint, Head, create_key, wrong_key
from .audit_rows import GENESIS, canonical, hashed_text, unkeyed_row_hash
from .audit_verify import AuditVerdict, signers, verify_chains
from .models import AuditEvent, AuditHead, AuditProjectHead

__all__ = ["GENESIS", "AuditChain", "AuditVerdict", "Checkpoint", "canonical", "hashed_text", "unkeyed_row_hash"]

SERVER_CHAIN = 0
PENDING = "audit_pending"  # the session.info key of the events ``record`` queued


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
    session.info.setdefault(PENDING, []).append(event(actor, action, entity, entity_id, before, after, project_id))


def event(actor: str, action: str, entity: str, entity_id, before, after, project_id: int | None) -> tuple:
    """An event as ``append`` takes it (what ``record`` queues)."""
    return actor, action, entity, str(entity_id), project_id, canonical(before or {}), canonical(after or {})


# plain Core on the tables, not the ORM's bulk path: about 0.6 ms less per append, and a head row's lock
# (which serializes the audited writes of its chain) is held that much shorter
_EVENTS, _HEADS, _PROJECT_HEADS = AuditEvent.__table__, AuditHead.__table__, AuditProjectHead.__table__
_HEAD = (
    select(_HEADS.c.seq, _HEADS.c.hash, _HEADS.c.keyed_from, _HEADS.c.key_id).where(_HEADS.c.id == 1).with_for_update()
)
# a project's head, and the key the chains are bound to (kept on chain 0's head)
_PROJECT_HEAD = (
    select(_PROJECT_HEADS.c.base, _PROJECT_HEADS.c.seq, _PROJECT_HEADS.c.hash, _HEADS.c.key_id)
    .select_from(_PROJECT_HEADS.join(_HEADS, _HEADS.c.id == 1))
    .where(_PROJECT_HEADS.c.project_id == bindparam("project_id"))
    .with_for_update(of=_PROJECT_HEADS)
)
_INSERT = insert(_EVENTS)
_MOVE_HEAD = update(_HEADS).where(_HEADS.c.id == 1)
_MOVE_PROJECT_HEAD = (
    update(_PROJECT_HEADS)
    .where(_PROJECT_HEADS.c.project_id == bindparam("p_project_id"))
    .values(seq=bindparam("p_seq"), hash=bindparam("p_hash"))
)


def _new_project_head(dialect: str):
    """A project's first event makes its head (a concurrent first event's head is kept)."""
    return (
        (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_PROJECT_HEADS)
        .values(project_id=bindparam("project_id"), base=0, seq=0, hash=GENESIS)
        .on_conflict_do_nothing()
    )


def _lock_head(connection: Connection, chain: AuditChain, chain_id: int) -> tuple[int, str, int]:
    """Lock a chain's head; its (seq, hash, keyed_from). Refuses a key other than the chain's."""
    if chain_id == SERVER_CHAIN:
        seq, head, keyed_from, key_id = connection.execute(_HEAD).one()
    else:
        row = connection.execute(_PROJECT_HEAD, {"project_id": chain_id}).first()
        if row is None:
            connection.execute(_new_project_head(connection.dialect.name), {"project_id": chain_id})
            row = connection.execute(_PROJECT_HEAD, {"project_id": chain_id}).first()
        if row is None:
            raise AuditKeyError("the audit_head row is missing: no audit chain can be appended to")
        base, seq, head, key_id = row
        keyed_from = base + 1
    if key_id != chain.key_id:
        # a replica with another key would fork the chain into rows nobody can verify with one key
        raise AuditKeyError(wrong_key(chain, key_id))
    return seq, head, keyed_from


def append(connection: Connection, chain: AuditChain | None, pending: list[tuple]) -> list[Head]:
    """Append events (``event`` tuples, in order) to their chains: each chain's head locked in chain order
    (so two writers never wait on each other in a circle), its rows chained in the order given. Returns the
    new heads, for the checkpoints once committed."""
    if not pending:
        return []
    if chain is None:
        raise AuditKeyError("audit events need the audit key: Database(url, AuditChain.from_settings(settings))")
    by_chain: dict[int, list[tuple]] = {}
    for item in pending:
        by_chain.setdefault(item[4] or SERVER_CHAIN, []).append(item)
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows, heads = [], []
    for chain_id in sorted(by_chain):
        seq, previous, keyed_from = _lock_head(connection, chain, chain_id)
        for actor, action, entity, entity_id, project_id, before, after in by_chain[chain_id]:
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
            rows.append(vars(row) | {"chain": chain_id})
        heads.append(Head(chain_id, seq, previous, keyed_from))
    connection.execute(_INSERT, rows)
    for head in heads:
        if head.chain == SERVER_CHAIN:
            connection.execute(_MOVE_HEAD.values(seq=head.seq, hash=head.hash))
        else:
            connection.execute(_MOVE_PROJECT_HEAD, {"p_project_id": head.chain, "p_seq": head.seq, "p_hash": head.hash})
    return heads


def write_pending(session: Session, chain: AuditChain | None) -> list[Head]:
    """Append the events ``record`` queued in this session (at the end of every write transaction)."""
    return append(session.connection(), chain, session.info.pop(PENDING, []))


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
        signed_by = signers(chain.checkpoint_path)
        if signed_by:
            raise AuditKeyError(
                f"no audit key at {chain.key_path}, but {chain.checkpoint_path} holds checkpoints signed with key id "
                f"{', '.join(sorted(signed_by))}: restore the key file from the data directory's backup"
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
            raise AuditKeyError(wrong_key(chain, key_id))


def verify(session: Session, chain: AuditChain, anchors: Iterable[Path] = ()) -> AuditVerdict:
    """Walk every chain in order, naming the first row that does not fit, then hold it against every signed
    checkpoint of the checkpoint file and of ``anchors`` (checkpoints exported earlier and kept elsewhere)."""
    return verify_chains(session, chain, anchors)


def checkpoint_now(database, anchors: Iterable[Path] = ()) -> tuple[AuditVerdict, list[Checkpoint]]:
    """On demand: verify the chains, then sign and append a checkpoint of each verified head (to export)."""
    with database.reading() as session:
        verdict = verify(session, database.chain, anchors)
    if not verdict.ok:
        return verdict, []
    sign = database.chain.sign
    checkpoints = [sign(head.seq, head.hash, head.keyed_from, chain=head.chain) for head in verdict.heads]
    for index, checkpoint in enumerate(checkpoints):
        database.chain.append(checkpoint, sync=index == len(checkpoints) - 1)
    return verdict, checkpoints
