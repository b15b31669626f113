"""Verification of the audit chains (``audit``): every chain walked in order and held against every signed
checkpoint of the checkpoint file and of exported ones. Chain 0 (server-wide) keeps the messages it had
before there were project chains; a project chain's messages start with ``project N:``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from .audit_keys import AuditChain, AuditKeyError, Checkpoint, CheckpointLine, Head, read_checkpoint_lines, wrong_key
from .audit_rows import GENESIS, hashed_text, unkeyed_row_hash
from .models import AuditEvent, AuditHead, AuditProjectHead


@dataclass
class AuditVerdict:
    ok: bool
    rows: int
    message: str
    bad_seq: int | None = None
    problems: list[str] = field(default_factory=list)
    key_problem: bool = False  # the key is missing or wrong: nothing could be checked
    heads: list[Head] = field(default_factory=list)  # every chain's verified head, for checkpoints on demand
    checkpoints: int = 0
    bad_chain: int | None = None  # the chain of bad_seq: 0 server-wide, else a project's id


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


def signers(path: Path) -> set[str]:
    """The key ids that signed the checkpoints of a file."""
    return {line.checkpoint.key for line in _File.read(path).lines if line.checkpoint}


@dataclass
class _Chain:
    """One chain as its head records it: rows ``first`` to ``seq``, the last with hash ``hash``."""

    id: int
    first: int
    seq: int
    hash: str
    keyed_from: int

    def prefix(self) -> str:
        return "" if self.id == 0 else f"project {self.id}: "

    def row(self, seq: int) -> str:
        return f"row {seq}" if self.id == 0 else f"row {seq} of project {self.id}"


def _key_problem(chain: AuditChain, head: AuditHead, file: _File) -> str | None:
    try:
        chain.key  # noqa: B018 (reads the key)
    except AuditKeyError as error:
        made_with = f"; the chain was made with key id {head.key_id}" if head.key_id else ""
        return f"{error}{made_with}: the chain cannot be verified without its key"
    if head.key_id is not None and head.key_id != chain.key_id:
        return wrong_key(chain, head.key_id)
    signed_by = {line.checkpoint.key for line in file.lines if line.checkpoint}
    if head.key_id is None and signed_by and chain.key_id not in signed_by:
        return wrong_key(chain, ", ".join(sorted(signed_by)))
    return None


def verify_chains(session: Session, chain: AuditChain, anchors: Iterable[Path] = ()) -> AuditVerdict:
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
    _check_file(chain, head, [item for item in signed if item.checkpoint.chain == 0], problems)
    chains = {0: _Chain(0, 1, head.seq, head.hash, head.keyed_from)}
    for row in session.execute(select(AuditProjectHead)).scalars():
        chains[row.project_id] = _Chain(row.project_id, row.base + 1, row.seq, row.hash, row.base + 1)
    everything = signed + exported
    _check_boundaries(chains, everything, problems)
    in_file = {item.checkpoint.sig for item in signed}
    for item in exported:
        if item.checkpoint.sig not in in_file:
            row = chains.get(item.checkpoint.chain, _Chain(item.checkpoint.chain, 0, 0, "", 0)).row(item.checkpoint.seq)
            problems.append(
                f"the exported checkpoint of {row} ({item.source}, signed {item.checkpoint.at}) "
                f"is not in {chain.checkpoint_path}: the checkpoint file was truncated or rewritten"
            )
    wanted: dict[int, list[_Signed]] = {}
    for item in everything:
        wanted.setdefault(item.checkpoint.chain, []).append(item)
    rows, heads, bad, chain_problems = _walk_all(session, chain, chains, wanted)
    for chain_id in sorted(set(wanted) - set(chains)):
        item = max(wanted[chain_id], key=lambda item: item.checkpoint.seq)
        chain_problems.append(
            f"project {chain_id}'s audit chain is gone (its head row was deleted): {item.source} is a checkpoint of "
            f"its row {item.checkpoint.seq} (signed {item.checkpoint.at})"
        )
    problems = chain_problems + problems  # what the rows show first, then what the files show
    if problems:
        bad_chain, bad_seq = bad or (None, None)
        return AuditVerdict(
            False, rows, problems[0], bad_seq, problems, checkpoints=len(everything), bad_chain=bad_chain
        )
    server_wide = [item for item in everything if item.checkpoint.chain == 0]
    newest = max(server_wide, key=lambda item: item.checkpoint.seq, default=None)
    message = f"audit chain ok: {rows} rows, head {heads[0].hash[:16]}, {len(everything)} signed checkpoints"
    if newest is not None:
        message += f" (newest: row {newest.checkpoint.seq}, {newest.checkpoint.at})"
    if len(chains) > 1:
        message += f"; {len(chains) - 1} project chains"
    if head.keyed_from > 1:
        message += f"; rows 1 to {head.keyed_from - 1} were made before the chain was keyed (SHA-256, sealed)"
    message = "; ".join([message, *notes])
    return AuditVerdict(True, rows, message, heads=heads, checkpoints=len(everything))


def _check_file(chain: AuditChain, head: AuditHead, signed: list[_Signed], problems: list[str]) -> None:
    """Chain 0's checkpoints: a bound chain has at least its seal (signed when the key was bound)."""
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


def _check_boundaries(chains: dict[int, _Chain], everything: list[_Signed], problems: list[str]) -> None:
    """Each checkpoint signed where its chain's keyed rows start: chain 0's boundary of the unkeyed rows, a
    project chain's first row; a head that says otherwise was moved."""
    reported: set[int] = set()
    for item in everything:
        checkpoint = item.checkpoint
        known = chains.get(checkpoint.chain)
        if known is None or checkpoint.keyed_from == known.keyed_from or checkpoint.chain in reported:
            continue
        reported.add(checkpoint.chain)
        if checkpoint.chain == 0:
            problems.append(
                f"audit_head.keyed_from is {known.keyed_from} but {item.source} signed {checkpoint.keyed_from}: "
                "the boundary of the unkeyed rows was moved in the database"
            )
        else:
            problems.append(
                f"project {checkpoint.chain}: its audit chain starts at row {known.first} but {item.source} signed "
                f"{checkpoint.keyed_from}: audit_project_heads.base was moved in the database"
            )


def _walk_all(session: Session, chain: AuditChain, chains: dict[int, _Chain], wanted):
    """Every chain's rows in one pass ordered by (chain, seq); (rows, heads, (chain, first bad seq) or None,
    problems)."""
    rows, heads, bad, problems = 0, [], None, []
    walkers = {chain_id: _Walk(chain, known, wanted.get(chain_id, [])) for chain_id, known in chains.items()}
    orphans: dict[int, int] = {}
    query = select(AuditEvent).order_by(AuditEvent.chain, AuditEvent.seq).execution_options(yield_per=2000)
    for row in session.execute(query).scalars():
        walker = walkers.get(row.chain)
        if walker is None:
            orphans[row.chain] = orphans.get(row.chain, 0) + 1
            continue
        rows += walker.step(row)
    for chain_id in sorted(walkers):
        walker = walkers[chain_id]
        walker.finish()
        heads.append(Head(chain_id, walker.last, walker.previous, chains[chain_id].keyed_from))
        if walker.problem:
            problems.append(walker.problem)
            bad = bad or (chain_id, walker.bad_seq)
    for chain_id, count in sorted(orphans.items()):
        problems.append(f"{count} audit rows of project {chain_id}'s chain have no head row: it was deleted")
        bad = bad or (chain_id, None)
    return rows, heads, bad, problems


class _Walk:
    """One chain's rows up to its head, in order, held against its checkpoints; stops at the first problem."""

    def __init__(self, chain: AuditChain, known: _Chain, checkpoints: list[_Signed]):
        self.chain, self.known = chain, known
        self.wanted: dict[int, list[_Signed]] = {}
        for item in checkpoints:
            self.wanted.setdefault(item.checkpoint.seq, []).append(item)
        self.expected, self.previous, self.last = known.first, GENESIS, known.first - 1
        self.problem, self.bad_seq = _hold(known, self.wanted.pop(known.first - 1, []), known.first - 1, GENESIS), None
        if self.problem:
            self.bad_seq = known.first - 1
        self.done = self.problem is not None

    def _stop(self, problem: str, bad_seq: int | None) -> int:
        self.problem, self.bad_seq, self.done = self.known.prefix() + problem, bad_seq, True
        return 1

    def step(self, row) -> int:
        """Take the chain's next row; 1 if it counts as a row walked."""
        known = self.known
        if self.done or row.seq > known.seq:
            return 0
        if row.seq != self.expected:
            problem = f"audit row {self.expected} is missing (deleted); the next row is {row.seq}"
            return self._stop(problem, self.expected)
        if row.prev_hash != self.previous:
            return self._stop(f"audit row {row.seq}: its previous-hash does not match row {row.seq - 1}", row.seq)
        keyed = row.seq >= known.keyed_from
        if (self.chain.row_hash(hashed_text(row)) if keyed else unkeyed_row_hash(row)) != row.hash:
            return self._stop(f"audit row {row.seq}: modified (its hash does not match its content)", row.seq)
        if known.id != 0 and row.project_id != known.id:
            return self._stop(f"audit row {row.seq} belongs to project {row.project_id}: moved between chains", row.seq)
        self.previous, self.last, self.expected = row.hash, row.seq, row.seq + 1
        problem = _hold(known, self.wanted.pop(row.seq, []), row.seq, row.hash)
        if problem:
            self.problem, self.bad_seq, self.done = problem, row.seq, True
        return 1

    def finish(self) -> None:
        if self.done:
            return
        known, last = self.known, self.expected - 1
        self.done = True
        if known.seq != last or known.hash != self.previous:
            prefix = "audit head" if known.id == 0 else "its audit head"
            problem = f"{prefix} records row {known.seq} but the chain ends at row {last}: rows deleted"
            self.problem, self.bad_seq = known.prefix() + problem, last + 1
            return
        if self.wanted:
            # every checkpoint left is of a row after the end: the newest one shows how many rows were cut
            seq = max(self.wanted)
            item = self.wanted[seq][0]
            self.problem = known.prefix() + (
                f"rows {last + 1} to {seq} were deleted from the end of the chain: {item.source} is a checkpoint of "
                f"row {seq} (signed {item.checkpoint.at}) but the chain ends at row {last}"
            )
            self.bad_seq = last + 1


def _hold(known: _Chain, items: list[_Signed], seq: int, row_hash: str) -> str | None:
    for item in items:
        if item.checkpoint.head != row_hash:
            return known.prefix() + (
                f"audit row {seq} does not match {item.source} (signed {item.checkpoint.at}): the chain was "
                f"rewritten up to row {seq}"
            )
    return None
