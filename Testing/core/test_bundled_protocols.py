"""The bundled protocols: valid, and every code is a real one from Slicer's DICOM terminology tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from MedAnnotAssistLib.cli import main
from MedAnnotAssistLib.core.protocol import bundled_protocol, bundled_protocol_paths, bundled_protocols

EXPECTED = {"abdominal-organs", "head-neck-oar", "lung-nodule", "liver-lesion"}


def _terminology_dir() -> Path:
    spec = importlib.util.find_spec("trame_slicer")
    assert spec is not None, "trame-slicer (which ships Slicer's terminology files) is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "terminologies"


def _known_codes() -> set[tuple[str, str, str]]:
    """Every (scheme, value, meaning) in Slicer's DICOM master lists, read straight from the JSON."""
    codes = set()

    def walk(node):
        if isinstance(node, dict):
            if {"CodingSchemeDesignator", "CodeValue", "CodeMeaning"} <= node.keys():
                codes.add((node["CodingSchemeDesignator"], node["CodeValue"], node["CodeMeaning"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in _terminology_dir().glob("*DICOM-Master.term.json"):
        walk(json.loads(path.read_text()))
    assert len(codes) > 500
    return codes


def test_four_bundled_protocols_load():
    protocols = bundled_protocols()
    assert {p.id for p in protocols} == EXPECTED
    for protocol in protocols:
        assert protocol.version.count(".") == 2
        assert protocol.modality == "CT"
        assert len(protocol.structures) >= 3
        assert any(s.required for s in protocol.structures)
        assert all(s.instructions for s in protocol.structures), protocol.id
        assert len(protocol.checksum) == 64


def test_every_code_is_in_slicers_dicom_master_lists():
    known = _known_codes()
    missing = []
    for protocol in bundled_protocols():
        for structure in protocol.structures:
            t = structure.terminology
            for code in (t.category, t.type, t.type_modifier, t.anatomic_region, t.anatomic_region_modifier):
                if code and (code.scheme, code.value, code.meaning) not in known:
                    missing.append(f"{protocol.id}/{structure.id}: {code}")
    assert not missing, missing


def test_head_and_neck_uses_tg263_names():
    protocol = bundled_protocol("head-neck-oar")
    names = {s.id: s.tg263 for s in protocol.structures}
    assert all(names.values()), names
    assert names["brainstem"] == "Brainstem"
    assert names["spinal_cord"] == "SpinalCord"
    assert names["parotid_left"] == "Parotid_L"
    assert names["parotid_right"] == "Parotid_R"
    assert all(len(n) <= 16 for n in names.values())


def test_left_and_right_structures_have_modifiers_and_laterality():
    for protocol in bundled_protocols():
        for s in protocol.structures:
            if s.id.endswith(("_left", "_right")):
                side = s.id.rsplit("_", 1)[1]
                assert s.terminology.type_modifier is not None, s.id
                assert s.terminology.type_modifier.meaning.lower() == side, s.id
                assert s.rules.laterality is not None and s.rules.laterality.side == side, s.id


def test_cli_validate_and_list_bundled(capsys):
    assert main(["protocol", "validate", *map(str, bundled_protocol_paths())]) == 0
    assert capsys.readouterr().out == ""
    assert main(["protocol", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == EXPECTED
    assert all(r["structures"] >= 3 for r in rows)
    # 1.1.0 added TG-263 names (RTSTRUCT export needs them)
    assert {r["id"]: r["version"] for r in rows} == {
        "abdominal-organs": "1.1.0",
        "head-neck-oar": "1.0.0",
        "liver-lesion": "1.1.0",
        "lung-nodule": "1.1.0",
    }


def test_unknown_bundled_id_is_a_clear_error():
    with pytest.raises(KeyError, match="no bundled protocol 'abdomen' \\(bundled: "):
        bundled_protocol("abdomen")
