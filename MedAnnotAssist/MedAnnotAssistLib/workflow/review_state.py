"""What the review panel shows (see ``review.ReviewModel``): the readers, the structures with their agreement
and the reviewer's decision, the approved final's rule check, and the buttons with why they are off."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .events import Action

# stages of a review: nothing open; readers still working (the case is polled); the case's files on
# their way; ready to decide; hidden from the caller (a reader of the case before its approval); decided
NO_REVIEW, WAITING, LOADING, READY, BLINDED, DECIDED = "none", "waiting", "loading", "ready", "blinded", "decided"
CONSENSUS, READER, EDITED = "consensus", "reader", "edited"
ONE_READER = "one reader"  # a row's verdict when the case has a single reader: nothing to compare
REVIEW_ACTIONS = ("approve", "return", "edit", "show_consensus", "show_disagreement")


@dataclass(frozen=True)
class ReaderRow:
    name: str  # the server's user name (what ``take_reader`` sends)
    label: str  # what the panel shows: the name, or "Reader 1" when readers are shown anonymously
    visible: bool
    submission_id: int
    time_spent_s: float | None
    overrides: tuple[str, ...]  # the reader's override reasons, "structure rule: reason"


@dataclass(frozen=True)
class AgreementRow:
    structure_id: str
    name: str
    color: str
    verdict: str  # "agreed" or "needs adjudication" (the protocol's agreement setting), or "one reader"
    reason: str
    dice: float | None  # the readers' pairwise mean
    hd95_mm: float | None
    decision: str  # consensus (with one reader: the proposal, their segmentation), reader, edited
    reader: str | None  # for a reader's decision: the reader's name
    decision_text: str
    failures: tuple[str, ...]  # blocking rules the approved final would fail here
    override: str | None  # the reviewer's reason for keeping it anyway


@dataclass(frozen=True)
class ReviewState:
    stage: str
    case_id: int | None
    case_name: str
    round: int | None
    readers: tuple[ReaderRow, ...]
    rows: tuple[AgreementRow, ...]
    consensus_visible: bool
    disagreement_in_slices: bool
    disagreement_in_3d: bool
    final_problems: tuple[str, ...]  # why Approve is off: failures without a reason
    checking: bool  # the approved final's rules are being run on the decisions
    blinded_text: str
    message: str
    message_is_error: bool
    actions: Mapping[str, Action]
    # a case with one reader has no consensus: their segmentation is the proposal (the server approves it
    # for "accept_consensus"); their label here, None for a case with a consensus
    one_reader: str | None = None

    def row(self, structure_id: str) -> AgreementRow:
        return next(r for r in self.rows if r.structure_id == structure_id)
