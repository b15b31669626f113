"""Malformed protocol files: each gives exactly one precise line `FILE: $.json.path: message`, never a traceback."""

from __future__ import annotations

import copy
import json

import pytest

from MedAnnotAssistLib.cli import main
from MedAnnotAssistLib.core.protocol import ProtocolError, load_protocol

ANATOMY = {"CodingSchemeDesignator": "SCT", "CodeValue": "123037004", "CodeMeaning": "Anatomical Structure"}
VALID = {
    "formatVersion": 1,
    "id": "test-protocol",
    "version": "1.2.0",
    "title": "Test",
    "modality": "CT",
    "structures": [
        {
            "id": "liver",
            "name": "Liver",
            "color": "#dd8265",
            "terminology": {
                "category": ANATOMY,
                "type": {"CodingSchemeDesignator": "SCT", "CodeValue": "10200004", "CodeMeaning": "Liver"},
            },
            "rules": {"volumeMl": {"min": 600, "max": 4000}, "maxComponents": 1},
        },
        {
            "id": "lesion",
            "name": "Lesion",
            "color": "#e6ef3c",
            "required": False,
            "terminology": {
                "category": {
                    "CodingSchemeDesignator": "SCT",
                    "CodeValue": "49755003",
                    "CodeMeaning": "Morphologically Altered Structure",
                },
                "type": {"CodingSchemeDesignator": "SCT", "CodeValue": "4147007", "CodeMeaning": "Mass"},
            },
            "rules": {"inside": {"structure": "liver", "fraction": 0.9}},
            "agreement": {"metric": "dice", "threshold": 0.8},
        },
    ],
}


def mutate(change):
    data = copy.deepcopy(VALID)
    change(data)
    return data


def _set(path, value):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path):
    def change(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


CASES = [
    ("unknown top-level key", _set(["colour"], "red"), "$.colour", "unknown key (allowed here:"),
    ("unknown structure key", _set(["structures", 1, "colour"], "#000000"), "$.structures[1].colour", "unknown key"),
    ("missing colour", _delete(["structures", 0, "color"]), "$.structures[0]", "missing required key 'color'"),
    (
        "colour not hex",
        _set(["structures", 0, "color"], "red"),
        "$.structures[0].color",
        "'red' is not a colour written #RRGGBB",
    ),
    (
        "duplicate id",
        lambda d: (_set(["structures", 1, "id"], "liver")(d), _delete(["structures", 1, "rules"])(d)),
        "$.structures[1].id",
        "duplicate id 'liver' (first at $.structures[0].id)",
    ),
    (
        "duplicate colour",
        _set(["structures", 1, "color"], "#DD8265"),
        "$.structures[1].color",
        "duplicate colour '#dd8265'",
    ),
    (
        "inside unknown structure",
        _set(["structures", 1, "rules", "inside", "structure"], "livr"),
        "$.structures[1].rules.inside.structure",
        "no structure with id 'livr' (known: lesion, liver)",
    ),
    (
        "inside itself",
        _set(["structures", 1, "rules", "inside", "structure"], "lesion"),
        "$.structures[1].rules.inside.structure",
        "cannot refer to itself",
    ),
    (
        "code without meaning",
        _delete(["structures", 0, "terminology", "type", "CodeMeaning"]),
        "$.structures[0].terminology.type",
        "missing required key 'CodeMeaning'",
    ),
    (
        "blank code value",
        _set(["structures", 0, "terminology", "type", "CodeValue"], "  "),
        "$.structures[0].terminology.type.CodeValue",
        "'  ' is not a non-blank text without ~ ^ | (Slicer reserves them)",
    ),
    ("future format", _set(["formatVersion"], 2), "$.formatVersion", "expected 1, got 2"),
    ("version not semver", _set(["version"], "1.0"), "$.version", "'1.0' is not a version MAJOR.MINOR.PATCH"),
    ("unknown modality", _set(["modality"], "XR"), "$.modality", "'XR' is not one of 'CT', 'MR'"),
    (
        "volume min above max",
        _set(["structures", 0, "rules", "volumeMl"], {"min": 5000, "max": 4000}),
        "$.structures[0].rules.volumeMl",
        "min 5000 is larger than max 4000",
    ),
    (
        "count as text",
        _set(["structures", 0, "rules", "maxComponents"], "1"),
        "$.structures[0].rules.maxComponents",
        "expected integer, got str '1'",
    ),
    ("no structures", _set(["structures"], []), "$.structures", "must not be empty"),
    (
        "surface dice without tolerance",
        _set(["structures", 1, "agreement"], {"metric": "surfaceDice", "threshold": 0.9}),
        "$.structures[1].agreement",
        "surfaceDice needs 'toleranceMm'",
    ),
    (
        "dice above one",
        _set(["structures", 1, "agreement", "threshold"], 1.5),
        "$.structures[1].agreement.threshold",
        "dice is between 0 and 1, got 1.5",
    ),
    (
        "same codes twice",
        _set(["structures", 1, "terminology"], copy.deepcopy(VALID["structures"][0]["terminology"])),
        "$.structures[1].terminology",
        "duplicate terminology (type, modifier and region codes) 'SCT:10200004 (Liver)'",
    ),
    (
        "names differing by case",
        _set(["structures", 1, "name"], "LIVER"),
        "$.structures[1].name",
        "duplicate name 'liver'",
    ),
    (
        "reserved character in a code",
        _set(["structures", 0, "terminology", "type", "CodeMeaning"], "Liver~left"),
        "$.structures[0].terminology.type.CodeMeaning",
        "'Liver~left' is not a non-blank text without ~ ^ |",
    ),
    (
        "volume rule on a landmark",
        _set(["structures", 0, "kind"], "landmark"),
        "$.structures[0].rules.maxComponents",
        "applies to segments only, not to a landmark",
    ),
]


def test_valid_base_protocol_loads(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(VALID))
    protocol = load_protocol(path)
    assert [s.id for s in protocol.structures] == ["liver", "lesion"]
    assert protocol.structure("lesion").rules.inside.fraction == 0.9
    assert protocol.structure("liver").color_rgb == pytest.approx((0xDD / 255, 0x82 / 255, 0x65 / 255))


@pytest.mark.parametrize(("case", "change", "json_path", "message"), CASES, ids=[c[0] for c in CASES])
def test_malformed_protocol_gives_one_precise_line(tmp_path, capsys, case, change, json_path, message):
    path = tmp_path / "protocol.json"
    path.write_text(json.dumps(mutate(change), indent=2))

    assert main(["protocol", "validate", "--quiet", str(path)]) == 2

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}: {json_path}: "), lines[0]
    assert message in lines[0]


def test_invalid_json_names_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "id": "x",\n  "version": "1.0.0",\n}\n')
    assert main(["protocol", "validate", str(path)]) == 2
    out = capsys.readouterr().out.strip()
    assert out == f"{path}: $: not valid JSON: Expecting property name enclosed in double quotes at line 4, column 1"


def test_missing_file_and_non_object(tmp_path, capsys):
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    missing = tmp_path / "missing.json"
    assert main(["protocol", "validate", str(missing), str(listing)]) == 2
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{missing}: $: cannot read file: No such file or directory",
        f"{listing}: $: expected object, got list [1, 2]",
    ]


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"title": "Fóie"}'.encode("latin-1"))
    with pytest.raises(ProtocolError) as error:
        load_protocol(path)
    assert len(error.value.problems) == 1
    assert str(error.value).startswith(f"{path}: $: cannot read file: 'utf-8' codec can't decode")


def test_several_problems_are_all_reported(tmp_path):
    data = mutate(_set(["modality"], "XR"))
    data["structures"][0]["color"] = "red"
    path = tmp_path / "two.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProtocolError) as error:
        load_protocol(path)
    assert sorted(p.path for p in error.value.problems) == ["$.modality", "$.structures[0].color"]
