"""The maintained name map: class names from engines and label files -> DICOM codes -> a protocol's structures.

Engines (TotalSegmentator, MONAI Label) and ``--labels-json`` files name their labels in their own words
(``portal_vein_and_splenic_vein``, ``Left Kidney``, ``kidney_L``); protocols name structures by DICOM/SNOMED CT
codes. ``match_name(protocol, name, terminology)`` finds the protocol structure a name stands for, in order:

1. by code: the name's codes (given, or from this map) equal a structure's type, type modifier and, where both
   have one, anatomic region;
2. by name: the name's canonical form (``canonical_name``: lower_snake_case, sides last, ``ALIASES`` applied)
   equals the canonical form of a structure's id, name or TG-263 name;
3. as a part (only where asked): ``PARTS`` says the class is part of a larger structure (a lung lobe of a lung),
   and the protocol has that structure; its voxels then go into it.

Codes of a name come from the bundled protocols' structure with that id (``portal_vein_and_splenic_vein`` ->
alias ``portal_vein`` -> abdominal-organs' Portal vein), then from ``LOBES`` and ``EXTRA`` (SNOMED CT codes as
in Slicer's DICOM master list). ``TOTAL_CLASSES`` is TotalSegmentator 2.x's "total" task; every name in it is a
known name, so a ``--labels-json`` holding TotalSegmentator's class map is never mistaken for a typo.
Maintain: a new engine's names go into ``ALIASES`` (other spellings of a known concept) or ``EXTRA`` (new codes).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from .protocol import Code, Protocol, Structure, Terminology, bundled_protocols

ANATOMY = Code("SCT", "123037004", "Anatomical Structure")
TISSUE = Code("SCT", "85756007", "Tissue")
LEFT = Code("SCT", "7771000", "Left")
RIGHT = Code("SCT", "24028007", "Right")
GENERIC = Code("SCT", "91723000", "Anatomical structure")

# TotalSegmentator 2.x "total" task: value -> class name (its map_to_binary.class_map["total"])
TOTAL_CLASSES = {
    1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach", 7: "pancreas",
    8: "adrenal_gland_right", 9: "adrenal_gland_left", 10: "lung_upper_lobe_left", 11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right", 13: "lung_middle_lobe_right", 14: "lung_lower_lobe_right", 15: "esophagus",
    16: "trachea", 17: "thyroid_gland", 18: "small_bowel", 19: "duodenum", 20: "colon", 21: "urinary_bladder",
    22: "prostate", 23: "kidney_cyst_left", 24: "kidney_cyst_right", 25: "sacrum", 26: "vertebrae_S1",
    27: "vertebrae_L5", 28: "vertebrae_L4", 29: "vertebrae_L3", 30: "vertebrae_L2", 31: "vertebrae_L1",
    32: "vertebrae_T12", 33: "vertebrae_T11", 34: "vertebrae_T10", 35: "vertebrae_T9", 36: "vertebrae_T8",
    37: "vertebrae_T7", 38: "vertebrae_T6", 39: "vertebrae_T5", 40: "vertebrae_T4", 41: "vertebrae_T3",
    42: "vertebrae_T2", 43: "vertebrae_T1", 44: "vertebrae_C7", 45: "vertebrae_C6", 46: "vertebrae_C5",
    47: "vertebrae_C4", 48: "vertebrae_C3", 49: "vertebrae_C2", 50: "vertebrae_C1", 51: "heart", 52: "aorta",
    53: "pulmonary_vein", 54: "brachiocephalic_trunk", 55: "subclavian_artery_right", 56: "subclavian_artery_left",
    57: "common_carotid_artery_right", 58: "common_carotid_artery_left", 59: "brachiocephalic_vein_left",
    60: "brachiocephalic_vein_right", 61: "atrial_appendage_left", 62: "superior_vena_cava",
    63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein", 65: "iliac_artery_left", 66: "iliac_artery_right",
    67: "iliac_vena_left", 68: "iliac_vena_right", 69: "humerus_left", 70: "humerus_right", 71: "scapula_left",
    72: "scapula_right", 73: "clavicula_left", 74: "clavicula_right", 75: "femur_left", 76: "femur_right",
    77: "hip_left", 78: "hip_right", 79: "spinal_cord", 80: "gluteus_maximus_left", 81: "gluteus_maximus_right",
    82: "gluteus_medius_left", 83: "gluteus_medius_right", 84: "gluteus_minimus_left", 85: "gluteus_minimus_right",
    86: "autochthon_left", 87: "autochthon_right", 88: "iliopsoas_left", 89: "iliopsoas_right", 90: "brain",
    91: "skull", 92: "rib_left_1", 93: "rib_left_2", 94: "rib_left_3", 95: "rib_left_4", 96: "rib_left_5",
    97: "rib_left_6", 98: "rib_left_7", 99: "rib_left_8", 100: "rib_left_9", 101: "rib_left_10", 102: "rib_left_11",
    103: "rib_left_12", 104: "rib_right_1", 105: "rib_right_2", 106: "rib_right_3", 107: "rib_right_4",
    108: "rib_right_5", 109: "rib_right_6", 110: "rib_right_7", 111: "rib_right_8", 112: "rib_right_9",
    113: "rib_right_10", 114: "rib_right_11", 115: "rib_right_12", 116: "sternum", 117: "costal_cartilages",
}  # fmt: skip
# TotalSegmentator 1.x "total" classes that 2.x renamed or split: still known names in old class maps
TOTAL_V1_NAMES = (
    "heart_myocardium", "heart_atrium_left", "heart_ventricle_left", "heart_atrium_right", "heart_ventricle_right",
    "pulmonary_artery", "face",
)  # fmt: skip
# other spellings -> the bundled protocols' structure id (or an EXTRA key) with the same concept
ALIASES = {
    "portal_vein_and_splenic_vein": "portal_vein", "portal_and_splenic_vein": "portal_vein",
    "thyroid_gland": "thyroid", "oesophagus": "esophagus", "gall_bladder": "gallbladder", "ivc": "inferior_vena_cava",
    "postcava": "inferior_vena_cava", "vena_cava_inferior": "inferior_vena_cava", "svc": "superior_vena_cava",
    "lungs": "lung", "kidneys": "kidney", "small_intestine": "small_bowel", "bladder": "urinary_bladder",
    "adrenal": "adrenal_gland", "clavicula": "clavicle", "iliac_vena": "iliac_vein",
}  # fmt: skip
# SNOMED CT codes (as in Slicer's DICOM master list) for concepts no bundled protocol uses yet
EXTRA = {
    "lung": ("Lung", "39607008"), "kidney": ("Kidney", "64033007"), "adrenal_gland": ("Adrenal gland", "23451007"),
    "trachea": ("Trachea", "44567001"),
    "small_bowel": ("Small intestine", "30315005"), "colon": ("Colon", "71854001"),
    "urinary_bladder": ("Urinary bladder", "89837001"), "prostate": ("Prostate", "41216001"),
    "heart": ("Heart", "80891009"), "superior_vena_cava": ("Superior vena cava", "48345005"),
    "sacrum": ("Sacrum", "54735007"), "sternum": ("Sternum", "56873002"), "skull": ("Skull", "89546000"),
    "femur": ("Femur", "71341001"), "humerus": ("Humerus", "85050009"), "scapula": ("Scapula", "79601000"),
    "clavicle": ("Clavicle", "51299004"), "iliac_artery": ("Common iliac artery", "73634005"),
    "iliac_vein": ("Common iliac vein", "46027005"),
}  # fmt: skip
LOBES = {  # lobes are their own concepts, not "lung" with a modifier
    "lung_upper_lobe_left": ("Upper lobe of left lung", "44714003"),
    "lung_lower_lobe_left": ("Lower lobe of left lung", "90572001"),
    "lung_upper_lobe_right": ("Upper lobe of right lung", "45653009"),
    "lung_middle_lobe_right": ("Middle lobe of right lung", "72481006"),
    "lung_lower_lobe_right": ("Lower lobe of right lung", "50837003"),
}
# a class that is a part of a larger structure: its voxels go to that structure when a protocol has only the whole
PARTS = {
    "lung_upper_lobe_left": "lung_left", "lung_lower_lobe_left": "lung_left", "lung_upper_lobe_right": "lung_right",
    "lung_middle_lobe_right": "lung_right", "lung_lower_lobe_right": "lung_right",
}  # fmt: skip
_SIDES = {"left": "left", "l": "left", "lt": "left", "right": "right", "r": "right", "rt": "right"}
PALETTE = ("#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")


@cache
def _protocol_structures() -> dict[str, Structure]:
    """Structure id -> the first bundled protocol structure with that id."""
    index = {}
    for protocol in bundled_protocols():
        for structure in protocol.structures:
            index.setdefault(structure.id, structure)
    return index


def canonical_name(name: str) -> str:
    """``Left Kidney``, ``kidney_L``, ``left-kidney`` -> ``kidney_left``; other names -> lower_snake_case."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.casefold()) if w and w != "the"]
    sides = [_SIDES[w] for w in words if w in _SIDES]
    base = "_".join(w for w in words if w not in _SIDES) or "structure"
    base = ALIASES.get(base, base)
    return f"{base}_{sides[0]}" if len(sides) == 1 else base


def color_for(key: str) -> str:
    return PALETTE[sum(map(ord, key)) % len(PALETTE)]


def coded(name: str) -> tuple[str, str, Terminology] | None:
    """(display name, colour, codes) of a class name, or None when the map knows no code for it."""
    key = canonical_name(name)
    found = _protocol_structures().get(key)
    if found is not None:
        return found.name, found.color, found.terminology
    if key in LOBES:
        meaning, value = LOBES[key]
        return meaning, color_for(key), Terminology(ANATOMY, Code("SCT", value, meaning))
    base, _, side = key.rpartition("_")
    if side not in ("left", "right"):
        base, side = key, ""
    if base not in EXTRA:
        return None
    meaning, value = EXTRA[base]
    modifier = {"left": LEFT, "right": RIGHT}.get(side)
    label = f"{side.capitalize()} {meaning.lower()}" if modifier else meaning
    return label, color_for(key), Terminology(ANATOMY, Code("SCT", value, meaning), modifier)


@cache
def _known() -> frozenset[str]:
    names = {*TOTAL_CLASSES.values(), *TOTAL_V1_NAMES, *ALIASES, *ALIASES.values(), *LOBES, *PARTS.values()}
    names |= set(_protocol_structures())
    return frozenset(canonical_name(n) for n in names)


def is_known_name(name: str) -> bool:
    """Whether the map knows the name: a TotalSegmentator class, an alias, a coded concept or a bundled structure."""
    return canonical_name(name) in _known() or coded(name) is not None


def _same(a: Code | None, b: Code | None) -> bool:
    return a is None and b is None or (a is not None and a.same_concept(b))


def same_concept(a: Terminology, b: Terminology) -> bool:
    """Same type and type modifier; the anatomic regions too where both name one."""
    if not (_same(a.type, b.type) and _same(a.type_modifier, b.type_modifier)):
        return False
    return a.anatomic_region is None or b.anatomic_region is None or _same(a.anatomic_region, b.anatomic_region)


def _segments(protocol: Protocol) -> list[Structure]:
    return [s for s in protocol.structures if s.kind == "segment"]


def _structure_keys(structure: Structure) -> set[str]:
    return {canonical_name(n) for n in (structure.id, structure.name, structure.tg263) if n}


def match_name(
    protocol: Protocol, name: str, terminology: Terminology | None = None, parts: bool = False
) -> tuple[Structure | None, str]:
    """(the protocol's segment structure that ``name`` stands for, how it matched) or (None, "").

    ``terminology``: the codes the engine gave the name (else they come from this map); the generic
    "Anatomical structure" code matches nothing. With ``parts``, a part (a lung lobe) matches the whole."""
    structures = _segments(protocol)
    own = coded(name)
    codes = terminology if terminology is not None and not terminology.type.same_concept(GENERIC) else None
    for candidate in (codes, own[2] if own else None):
        if candidate is None:
            continue
        for structure in structures:
            if same_concept(candidate, structure.terminology):
                return structure, "code"
    key = canonical_name(name)
    for structure in structures:
        if key in _structure_keys(structure):
            return structure, "name"
    if parts and key in PARTS:
        whole, how = match_name(protocol, PARTS[key])
        if whole is not None:
            return whole, f"part of {whole.name}"
    return None, ""


def suggestion(protocol: Protocol, name: str) -> str | None:
    """The protocol structure id a mistyped name most resembles, or None."""
    keys = {k: s.id for s in _segments(protocol) for k in _structure_keys(s)}
    close = difflib.get_close_matches(canonical_name(name), list(keys), n=1, cutoff=0.75)
    return keys[close[0]] if close else None


@dataclass
class LabelPlan:
    """Where each label of a labelmap goes under a protocol, from its ``--labels-json`` name."""

    structures: dict[int, Structure] = field(default_factory=dict)  # label value -> protocol structure
    how: dict[int, str] = field(default_factory=dict)  # label value -> how its name matched
    dropped: list[str] = field(default_factory=list)  # labels in the labelmap that the protocol lacks


def check_label_names(names: Mapping[int, str], protocol: Protocol, names_file: str) -> None:
    """Refuse a name that matches nothing: no structure of the protocol and no name the map knows (a typo)."""
    problems = []
    for value, name in sorted(names.items()):
        if match_name(protocol, name, parts=True)[0] is None and not is_known_name(name):
            hint = suggestion(protocol, name)
            guess = f" (did you mean '{hint}'?)" if hint else ""
            problems.append(
                f"{names_file}: $.{value}: '{name}' is neither a structure of {protocol.label} nor a class name the "
                f"name map knows{guess}; correct it, or remove the entry to leave label {value} out"
            )
    if problems:
        raise ValueError("\n".join(problems))


def map_labels(
    names: Mapping[int, str], protocol: Protocol, present: Iterable[int], names_file: str, labels_file: str
) -> LabelPlan:
    """Each label of a labelmap (``present``: its values) to a protocol structure, by name (parts join their whole).

    A ValueError names the typos: a name that matches nothing (``check_label_names``); keys that are not labels
    of the labelmap while some of its labels have no name (a mistyped key); no key at all among its labels."""
    check_label_names(names, protocol, names_file)
    present = sorted({int(v) for v in present} - {0})
    unnamed = [v for v in present if v not in names]
    absent = [v for v in sorted(names) if v not in set(present)]
    if present and len(absent) == len(names):
        raise ValueError(f"{names_file}: none of its labels occurs in {labels_file} (its labels: {_values(present)})")
    if unnamed and absent:
        raise ValueError(
            f"{names_file}: {', '.join(f'$.{v}' for v in absent[:10])}: no such label in {labels_file}, whose "
            f"label(s) {_values(unnamed)} have no name in {names_file}: a mistyped key?"
        )
    plan = LabelPlan()
    for value in present:
        if value not in names:
            plan.dropped.append(f"label {value} (no name)")
            continue
        structure, how = match_name(protocol, names[value], parts=True)
        if structure is None:
            plan.dropped.append(names[value])
        else:
            plan.structures[value], plan.how[value] = structure, how
    return plan


def _values(values: list[int], limit: int = 20) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
