from __future__ import annotations

import pytest

from MedAnnotAssistLib.core.protocol import Code, Terminology, bundled_protocols
from MedAnnotAssistLib.core.terminology import TerminologyStringError, from_slicer_string, to_slicer_string

LIVER = (
    "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure~SCT^10200004^Liver~^^"
    "~Anatomic codes - DICOM master list~^^~^^"
)


def test_liver_string_matches_slicers_format():
    terminology = Terminology(Code("SCT", "123037004", "Anatomical Structure"), Code("SCT", "10200004", "Liver"))
    assert to_slicer_string(terminology) == LIVER
    assert from_slicer_string(LIVER) == terminology


def test_every_bundled_structure_round_trips():
    for protocol in bundled_protocols():
        for structure in protocol.structures:
            assert from_slicer_string(to_slicer_string(structure.terminology)) == structure.terminology


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("Segmentation~SCT^1^A", "has 2 '~' fields, expected 7"),
        ("c~SCT^1~SCT^2^B~^^~a~^^~^^", "category 'SCT^1' in"),
        ("c~^^~SCT^2^B~^^~a~^^~^^", "has no category or no type code"),
        ("c~SCT^1^A~^2^B~^^~a~^^~^^", "type '^2^B' in"),
    ],
)
def test_malformed_strings(entry, message):
    with pytest.raises(TerminologyStringError, match=message.replace("^", "\\^")):
        from_slicer_string(entry)


def test_reserved_characters_are_refused():
    with pytest.raises(TerminologyStringError, match="reserved character"):
        to_slicer_string(Terminology(Code("SCT", "1", "A~B"), Code("SCT", "2", "C")))
