"""Request bodies and path parameters, with the limits the OpenAPI document publishes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from MedAnnotAssistLib.core.protocol_check import RULES

MAX_ID = 2**31 - 1

ProjectId = Annotated[int, Path(ge=1, le=MAX_ID)]
CaseId = Annotated[int, Path(ge=1, le=MAX_ID)]
TaskId = Annotated[int, Path(ge=1, le=MAX_ID)]
SubmissionId = Annotated[int, Path(ge=1, le=MAX_ID)]
ExportId = Annotated[int, Path(ge=1, le=MAX_ID)]
TokenId = Annotated[int, Path(ge=1, le=MAX_ID)]
UserName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$"
USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e9, le=1e9)]
Kind = Literal["annotate", "review"]
Role = Literal["annotator", "reviewer", "admin"]


def _clean_text(value):
    """Text that every database stores: no NUL, no lone surrogates."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text must be valid Unicode") from None
    return value


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _text(cls, value):
        return _clean_text(value)


class UserCreate(Body):
    name: str = Field(pattern=USER_PATTERN)
    email: str | None = Field(default=None, max_length=254)
    site_admin: bool = False
    token_label: str = Field(default="", max_length=64)


class TokenCreate(Body):
    label: str = Field(default="", max_length=64)
    expires_in_s: float | None = Field(default=None, gt=0, le=10 * 365 * 86400, allow_inf_nan=False)


class ProjectCreate(Body):
    name: str = Field(pattern=NAME_PATTERN)
    protocol_id: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    protocol: dict[str, Any] | None = Field(default=None, description="an uploaded protocol (protocol-v1 JSON)")
    readers_per_case: int | None = Field(default=None, ge=1, le=16, description="default: the protocol's")
    review: bool = True


class MemberRoles(Body):
    roles: list[Role] = Field(max_length=3)


class DicomWebRef(Body):
    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    study_uid: str = Field(pattern=UID_PATTERN, max_length=64)
    series_uid: str = Field(pattern=UID_PATTERN, max_length=64)


class BulkCase(Body):
    name: str = Field(pattern=NAME_PATTERN)
    image_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    dicomweb: DicomWebRef | None = None
    priority: Finite = 0.0


class BulkCases(Body):
    cases: list[BulkCase] = Field(min_length=1)


class ClaimRequest(Body):
    kind: Kind | None = None
    lease_seconds: float | None = Field(default=None, gt=0, le=86400, allow_inf_nan=False)


class LeaseRequest(Body):
    lease_id: str = Field(min_length=1, max_length=64)


class HeartbeatRequest(LeaseRequest):
    lease_seconds: float | None = Field(default=None, gt=0, le=86400, allow_inf_nan=False)


class ReleaseRequest(LeaseRequest):
    reason: str | None = Field(default=None, min_length=1, max_length=2000, description="why (a skip): audited")

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("a reason, when given, is not blank")
        return value.strip() if value is not None else None


class RuleOverride(Body):
    """Why a segmentation that fails a blocking rule of the protocol is right for this image."""

    structure: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="a structure id of the protocol")
    rule: Literal[RULES] | None = Field(default=None, description="omitted: every failing rule of the structure")
    reason: str = Field(min_length=1, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a reason is required (not blank)")
        return value


Overrides = Annotated[list[RuleOverride], Field(default_factory=list, max_length=256)]


class StructureDecision(Body):
    action: Literal["accept_consensus", "take_reader", "edited"]
    reader: str | None = Field(default=None, pattern=USER_PATTERN)


class ReturnToReader(Body):
    reader: str = Field(pattern=USER_PATTERN)
    comment: str = Field(min_length=1, max_length=4000)


class ReviewDecision(Body):
    lease_id: str = Field(min_length=1, max_length=64)
    decision: Literal["approve", "return"]
    structures: dict[str, StructureDecision] = Field(default_factory=dict, max_length=256)
    returns: list[ReturnToReader] = Field(default_factory=list, max_length=16)
    comment: str | None = Field(default=None, max_length=4000)
    overrides: Overrides  # the reviewer's, when the approved final fails a blocking rule


class ExportRequest(Body):
    format: Literal["nnunet", "monai"] = "nnunet"
    dataset_id: int = Field(default=501, ge=1, le=999)
    dataset_name: str = Field(default="MedAnnotAssist", pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class SegmentReport(BaseModel):
    """What the reader's client says about one segment (free-form beyond these keys)."""

    model_config = ConfigDict(extra="allow")
    state: str | None = Field(default=None, max_length=32)
    provenance: dict[str, Any] | None = None
    ai_vs_final: dict[str, Any] | None = None


class SubmissionMetadata(BaseModel):
    """The JSON part of a submission: time spent, and per-segment provenance and AI-vs-final statistics."""

    model_config = ConfigDict(extra="allow")
    time_spent_s: float = Field(ge=0, le=1e7, allow_inf_nan=False)
    segments: dict[str, SegmentReport] = Field(default_factory=dict, max_length=256)
    client: str | None = Field(default=None, max_length=200)
    overrides: Overrides  # the reader's, for blocking rules that fail (see protocol_rules)
