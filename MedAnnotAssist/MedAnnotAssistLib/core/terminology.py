"""Slicer's terminology entry string, written and read without Slicer.

A segment's ``TerminologyEntry`` tag is what Slicer's Terminologies UI shows as codes:
``context~category~type~typeModifier~anatomicContext~region~regionModifier``, each code
written ``CodingSchemeDesignator^CodeValue^CodeMeaning`` (an absent code is ``^^``).
"""

from __future__ import annotations

from .protocol import Code, Terminology

TERMINOLOGY_TAG = "TerminologyEntry"
DICOM_CATEGORY_CONTEXT = "Segmentation category and type - DICOM master list"
DICOM_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


class TerminologyStringError(ValueError):
    """A terminology entry string that does not have Slicer's seven '~' fields."""


def _code_text(code: Code | None) -> str:
    if code is None:
        return "^^"
    for part in (code.scheme, code.value, code.meaning):
        if any(sep in part for sep in "~^|"):
            raise TerminologyStringError(f"code part {part!r} contains a reserved character (~ ^ |)")
    return f"{code.scheme}^{code.value}^{code.meaning}"


def _parse_code(text: str, what: str, entry: str) -> Code | None:
    parts = text.split("^")
    if len(parts) != 3:
        raise TerminologyStringError(f"{what} {text!r} in {entry!r} is not SCHEME^VALUE^MEANING")
    if not any(parts):
        return None
    if not all(parts[:2]):
        raise TerminologyStringError(f"{what} {text!r} in {entry!r} lacks its scheme or value")
    return Code(*parts)


def to_slicer_string(
    terminology: Terminology,
    context: str = DICOM_CATEGORY_CONTEXT,
    anatomic_context: str = DICOM_ANATOMIC_CONTEXT,
) -> str:
    """The ``TerminologyEntry`` tag value for a protocol structure's codes."""
    fields = [
        context,
        _code_text(terminology.category),
        _code_text(terminology.type),
        _code_text(terminology.type_modifier),
        anatomic_context,
        _code_text(terminology.anatomic_region),
        _code_text(terminology.anatomic_region_modifier),
    ]
    return "~".join(fields)


def from_slicer_string(entry: str) -> Terminology:
    """Codes of a ``TerminologyEntry`` tag value; raises ``TerminologyStringError`` if malformed."""
    fields = entry.split("~")
    if len(fields) != 7:
        raise TerminologyStringError(f"terminology entry {entry!r} has {len(fields)} '~' fields, expected 7")
    category = _parse_code(fields[1], "category", entry)
    type_ = _parse_code(fields[2], "type", entry)
    if category is None or type_ is None:
        raise TerminologyStringError(f"terminology entry {entry!r} has no category or no type code")
    return Terminology(
        category=category,
        type=type_,
        type_modifier=_parse_code(fields[3], "type modifier", entry),
        anatomic_region=_parse_code(fields[5], "anatomic region", entry),
        anatomic_region_modifier=_parse_code(fields[6], "anatomic region modifier", entry),
    )
