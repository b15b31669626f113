"""The maintained name map (core.structure_names): class names -> codes -> a protocol's structures."""

from __future__ import annotations

import pytest

from MedAnnotAssistLib.core.engines import get_engine, match_protocol
from MedAnnotAssistLib.core.engines.totalsegmentator import TotalSegmentatorEngine
from MedAnnotAssistLib.core.protocol import Code, Terminology, bundled_protocol
from MedAnnotAssistLib.core.structure_names import (
    ANATOMY,
    GENERIC,
    TOTAL_CLASSES,
    check_label_names,
    is_known_name,
    map_labels,
    match_name,
)

ABDOMEN = bundled_protocol("abdominal-organs")
LUNG = bundled_protocol("lung-nodule")


@pytest.mark.parametrize(
    ("name", "structure_id", "how"),
    [
        ("portal_vein_and_splenic_vein", "portal_vein", "code"),  # TotalSegmentator's name, through the alias
        ("Left Kidney", "kidney_left", "code"),  # MONAI Label's spelling
        ("kidney_L", "kidney_left", "code"),
        ("adrenal_gland_right", "adrenal_gland_right", "code"),
        ("Superior mesenteric artery", "superior_mesenteric_artery", "code"),
        ("vertebrae_T12", None, ""),
        ("kidney_cyst_left", None, ""),
    ],
)
def test_names_match_by_code_then_by_name(name, structure_id, how):
    structure, matched_how = match_name(ABDOMEN, name)
    assert (structure.id if structure else None, matched_how) == (structure_id, how)


def test_a_name_the_map_has_no_code_for_matches_by_name():
    head_neck = bundled_protocol("head-neck-oar")
    assert match_name(head_neck, "Bone_Mandible") == (head_neck.structure("mandible"), "name")  # its TG-263 name
    assert match_name(head_neck, "LEFT PAROTID GLAND") == (head_neck.structure("parotid_left"), "name")


def test_a_part_joins_its_whole_only_when_asked():
    assert match_name(LUNG, "lung_upper_lobe_left") == (None, "")
    structure, how = match_name(LUNG, "lung_upper_lobe_left", parts=True)
    assert structure.id == "lung_left" and how == "part of Left lung"
    assert match_name(LUNG, "lung_middle_lobe_right", parts=True)[0].id == "lung_right"


def test_codes_match_with_their_modifier_and_region_and_the_generic_code_matches_nothing():
    lesion = bundled_protocol("liver-lesion")
    mass = Code("SCT", "4147007", "Mass")
    in_lung = Terminology(ANATOMY, mass, anatomic_region=Code("SCT", "39607008", "Lung"))
    assert match_name(lesion, "tumour", in_lung) == (None, "")  # a lung mass is no liver lesion
    assert match_name(lesion, "tumour", Terminology(ANATOMY, mass))[0].id == "liver_lesion"
    assert match_name(ABDOMEN, "thing", Terminology(ANATOMY, GENERIC)) == (None, "")
    right = Terminology(ANATOMY, Code("SCT", "64033007", "Kidney"), Code("SCT", "24028007", "Right"))
    assert match_name(ABDOMEN, "anything", right)[0].id == "kidney_right"


def test_engines_match_the_protocol_through_the_map():
    assert {k: s.id for k, s in match_protocol(get_engine("ct").info(), LUNG).items()} == {
        "lung_left": "lung_left",
        "lung_right": "lung_right",
    }
    lobes = match_protocol(TotalSegmentatorEngine().info(), LUNG, parts=True)
    assert {k: s.id for k, s in lobes.items()} == {
        "lung_upper_lobe_left": "lung_left",
        "lung_lower_lobe_left": "lung_left",
        "lung_upper_lobe_right": "lung_right",
        "lung_middle_lobe_right": "lung_right",
        "lung_lower_lobe_right": "lung_right",
    }


def test_every_totalsegmentator_class_is_a_known_name(total_labels):
    assert total_labels == TOTAL_CLASSES  # the built-in table is TotalSegmentator 2.x's whole "total" task
    assert all(is_known_name(name) for name in total_labels.values())
    assert not is_known_name("livr") and not is_known_name("Spleeen")


def test_label_name_typos_name_the_json_path_and_a_suggestion():
    check_label_names({1: "spleen", 2: "vertebrae_L1", 3: "Left kidney"}, ABDOMEN, "names.json")
    with pytest.raises(ValueError) as raised:
        check_label_names({1: "Spleeen", 2: "kidney_lef", 7: "xyz"}, ABDOMEN, "names.json")
    assert str(raised.value).splitlines() == [
        "names.json: $.1: 'Spleeen' is neither a structure of abdominal-organs@1.1.0 nor a class name the name map "
        "knows (did you mean 'spleen'?); correct it, or remove the entry to leave label 1 out",
        "names.json: $.2: 'kidney_lef' is neither a structure of abdominal-organs@1.1.0 nor a class name the name map "
        "knows (did you mean 'kidney_left'?); correct it, or remove the entry to leave label 2 out",
        "names.json: $.7: 'xyz' is neither a structure of abdominal-organs@1.1.0 nor a class name the name map "
        "knows; correct it, or remove the entry to leave label 7 out",
    ]


def test_map_labels_keys_against_the_labelmap():
    names = {1: "spleen", 5: "liver", 10: "lung_upper_lobe_left", 21: "urinary_bladder"}
    plan = map_labels(names, ABDOMEN, [0, 1, 5, 10], "names.json", "seg.nii.gz")  # 21: a class not in this scan
    assert {v: s.id for v, s in plan.structures.items()} == {1: "spleen", 5: "liver"}
    assert plan.dropped == ["lung_upper_lobe_left"]
    lungs = map_labels({1: "spleen", 5: "liver", 10: "lung_upper_lobe_left"}, LUNG, [1, 5, 10, 12], "n.json", "s")
    assert {v: s.id for v, s in lungs.structures.items()} == {10: "lung_left"}
    assert lungs.dropped == ["spleen", "liver", "label 12 (no name)"]
    with pytest.raises(ValueError, match=r"names.json: \$.21: no such label in seg.nii.gz, whose label\(s\) 12 have"):
        map_labels(names, ABDOMEN, [1, 5, 10, 12], "names.json", "seg.nii.gz")
    with pytest.raises(ValueError, match=r"names.json: none of its labels occurs in seg.nii.gz \(its labels: 2, 3\)"):
        map_labels(names, ABDOMEN, [0, 2, 3], "names.json", "seg.nii.gz")


def test_a_labelmap_named_by_totalsegmentator_gives_every_structure_it_has(sample_dir, total_labels):
    """`consensus` and `export` read labelmaps with read_reader: TotalSegmentator's names reach the protocol."""
    from MedAnnotAssistLib.core.labelio import read_reader

    reader = read_reader(sample_dir / "example_seg.nii.gz", ABDOMEN, total_labels)
    assert reader.segments["portal_vein"] == (0, 64)  # portal_vein_and_splenic_vein
    assert set(reader.segments) == {s.id for s in ABDOMEN.structures} - {"superior_mesenteric_artery"}
