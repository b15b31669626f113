"""Annotation protocols: the versioned JSON file that says what an expert must annotate.

A protocol is validated against ``Resources/Schema/protocol-v1.schema.json`` and then by
cross-field checks the schema cannot express. Every problem is reported as a
``ProtocolProblem`` naming the file and the JSON path, never as a traceback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

RESOURCES_DIR = Path(__file__).resolve().parents[2] / "Resources"
SCHEMA_PATH = RESOURCES_DIR / "Schema" / "protocol-v1.schema.json"
BUNDLED_PROTOCOLS_DIR = RESOURCES_DIR / "Protocols"

DEFAULT_INSIDE_FRACTION = 0.95
DEFAULT_OUTSIDE_FRACTION = 0.0

# Human wording for the schema's regular expressions, so errors say what was expected.
_PATTERN_HINTS = {
    "^#[0-9a-fA-F]{6}$": "a colour written #RRGGBB",
    "^[a-z0-9][a-z0-9-]{1,63}$": "an id of 2-64 lower-case letters, digits or dashes",
    "^[a-z][a-z0-9_]{0,63}$": "an id starting with a lower-case letter, then letters, digits or _",
    "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)$": "a version MAJOR.MINOR.PATCH",
    "^[A-Za-z0-9_~^-]{1,16}$": "a TG-263 name of at most 16 characters (letters, digits, _ ~ ^ -)",
    "^[^~^|]*[^~^|\\s][^~^|]*$": "a non-blank text without ~ ^ | (Slicer reserves them)",
}


@dataclass(frozen=True)
class ProtocolProblem:
    """One problem in a protocol file, printable as ``FILE: $.json.path: message``."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}"


class ProtocolError(ValueError):
    """A protocol file that cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ProtocolProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Code:
    """A DICOM coded concept (scheme designator, value, meaning)."""

    scheme: str
    value: str
    meaning: str

    @classmethod
    def from_json(cls, data: dict) -> Code:
        return cls(data["CodingSchemeDesignator"], data["CodeValue"], data["CodeMeaning"])

    def to_json(self) -> dict:
        return {"CodingSchemeDesignator": self.scheme, "CodeValue": self.value, "CodeMeaning": self.meaning}

    def same_concept(self, other: Code | None) -> bool:
        """Codes identify a concept by scheme and value; the meaning is only its label."""
        return other is not None and (self.scheme, self.value) == (other.scheme, other.value)


@dataclass(frozen=True)
class Terminology:
    category: Code
    type: Code
    type_modifier: Code | None = None
    anatomic_region: Code | None = None
    anatomic_region_modifier: Code | None = None

    _KEYS = (
        ("category", "category"),
        ("type", "type"),
        ("typeModifier", "type_modifier"),
        ("anatomicRegion", "anatomic_region"),
        ("anatomicRegionModifier", "anatomic_region_modifier"),
    )

    @classmethod
    def from_json(cls, data: dict) -> Terminology:
        return cls(**{attr: Code.from_json(data[key]) for key, attr in cls._KEYS if key in data})

    def to_json(self) -> dict:
        return {key: getattr(self, attr).to_json() for key, attr in self._KEYS if getattr(self, attr)}

    def concept_key(self) -> tuple:
        """What makes two entries the same structure: type, its modifier and the region."""
        parts = (self.type, self.type_modifier, self.anatomic_region, self.anatomic_region_modifier)
        return tuple((c.scheme, c.value) if c else None for c in parts)


@dataclass(frozen=True)
class StructureRef:
    structure: str
    fraction: float


@dataclass(frozen=True)
class Laterality:
    side: str  # "left" | "right", the patient's side
    midline: str | None = None


@dataclass(frozen=True)
class Rules:
    volume_ml_min: float | None = None
    volume_ml_max: float | None = None
    max_components: int | None = None
    inside: StructureRef | None = None
    outside: StructureRef | None = None
    laterality: Laterality | None = None
    severity: str = "error"

    @classmethod
    def from_json(cls, data: dict) -> Rules:
        volume = data.get("volumeMl", {})
        inside = data.get("inside")
        outside = data.get("outside")
        lat = data.get("laterality")
        return cls(
            volume_ml_min=volume.get("min"),
            volume_ml_max=volume.get("max"),
            max_components=data.get("maxComponents"),
            inside=StructureRef(inside["structure"], inside.get("fraction", DEFAULT_INSIDE_FRACTION))
            if inside
            else None,
            outside=StructureRef(outside["structure"], outside.get("fraction", DEFAULT_OUTSIDE_FRACTION))
            if outside
            else None,
            laterality=Laterality(lat["side"], lat.get("midline")) if lat else None,
            severity=data.get("severity", "error"),
        )

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (
                self.volume_ml_min,
                self.volume_ml_max,
                self.max_components,
                self.inside,
                self.outside,
                self.laterality,
            )
        )


@dataclass(frozen=True)
class Agreement:
    metric: str  # "dice" | "surfaceDice" | "hd95"
    threshold: float
    tolerance_mm: float | None = None


@dataclass(frozen=True)
class Structure:
    id: str
    name: str
    color: str
    terminology: Terminology
    required: bool = True
    kind: str = "segment"
    tg263: str | None = None
    instructions: str = ""
    rules: Rules = field(default_factory=Rules)
    agreement: Agreement | None = None

    @property
    def color_rgb(self) -> tuple[float, float, float]:
        """Colour as three floats in [0, 1], as Slicer segments store it."""
        return tuple(int(self.color[i : i + 2], 16) / 255.0 for i in (1, 3, 5))

    @classmethod
    def from_json(cls, data: dict) -> Structure:
        agreement = data.get("agreement")
        return cls(
            id=data["id"],
            name=data["name"],
            color=data["color"].lower(),
            terminology=Terminology.from_json(data["terminology"]),
            required=data.get("required", True),
            kind=data.get("kind", "segment"),
            tg263=data.get("tg263"),
            instructions=data.get("instructions", ""),
            rules=Rules.from_json(data.get("rules", {})),
            agreement=Agreement(agreement["metric"], agreement["threshold"], agreement.get("toleranceMm"))
            if agreement
            else None,
        )


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    type: str
    options: tuple[str, ...]
    required: bool = True


@dataclass(frozen=True)
class WindowPreset:
    name: str
    center: float
    width: float


@dataclass(frozen=True)
class Protocol:
    id: str
    version: str
    title: str
    modality: str
    structures: tuple[Structure, ...]
    description: str = ""
    windows: tuple[WindowPreset, ...] = ()
    volume_rendering: str | None = None
    readers_per_case: int = 1
    questions: tuple[Question, ...] = ()
    source: str = "<memory>"
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def checksum(self) -> str:
        """SHA-256 of the canonical JSON: identifies exactly what a project froze."""
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.id}@{self.version}"

    def structure(self, structure_id: str) -> Structure:
        for s in self.structures:
            if s.id == structure_id:
                return s
        raise KeyError(f"protocol {self.label} has no structure '{structure_id}'")

    def structure_by_name(self, name: str) -> Structure | None:
        return next((s for s in self.structures if s.name == name), None)

    @classmethod
    def from_json(cls, data: dict, source: str = "<memory>") -> Protocol:
        """Build from already validated JSON; use ``load_protocol`` or ``parse_protocol`` instead."""
        return cls(
            id=data["id"],
            version=data["version"],
            title=data["title"],
            modality=data["modality"],
            structures=tuple(Structure.from_json(s) for s in data["structures"]),
            description=data.get("description", ""),
            windows=tuple(WindowPreset(w["name"], w["center"], w["width"]) for w in data.get("window", [])),
            volume_rendering=data.get("volumeRendering"),
            readers_per_case=data.get("readersPerCase", 1),
            questions=tuple(
                Question(q["id"], q["text"], q["type"], tuple(q["options"]), q.get("required", True))
                for q in data.get("questions", [])
            ),
            source=source,
            raw=data,
        )


@cache
def protocol_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _json_path(parts: Iterable[Any]) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _schema_message(error: jsonschema.ValidationError) -> tuple[list, str]:
    """Turn a jsonschema error into (path parts, plain message)."""
    parts = list(error.absolute_path)
    kind = error.validator
    if kind == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return parts + [extra[0]], f"unknown key (allowed here: {', '.join(allowed)})"
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return parts, f"missing required key '{missing}'"
    if kind == "type":
        return parts, f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if kind == "enum":
        options = ", ".join(repr(v) for v in error.validator_value)
        return parts, f"{error.instance!r} is not one of {options}"
    if kind == "const":
        return parts, f"expected {error.validator_value!r}, got {error.instance!r}"
    if kind == "pattern":
        hint = _PATTERN_HINTS.get(error.validator_value, f"text matching {error.validator_value}")
        return parts, f"{error.instance!r} is not {hint}"
    if kind in ("minItems", "minLength", "minProperties") and not error.instance:
        return parts, "must not be empty"
    return parts, error.message


def _schema_problems(data: Any, source: str) -> list[ProtocolProblem]:
    validator = jsonschema.Draft202012Validator(protocol_schema())
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path))):
        parts, message = _schema_message(error)
        problems.append(ProtocolProblem(source, _json_path(parts), message))
    return problems


def _duplicates(values: list[tuple[str, Any]], what: str, source: str) -> list[ProtocolProblem]:
    seen: dict[Any, str] = {}
    problems = []
    for path, value in values:
        if value in seen:
            problems.append(ProtocolProblem(source, path, f"duplicate {what} {value!r} (first at {seen[value]})"))
        else:
            seen[value] = path
    return problems


def _concept_text(terminology: Terminology) -> str:
    codes = (terminology.type, terminology.type_modifier, terminology.anatomic_region)
    return " ".join(f"{c.scheme}:{c.value} ({c.meaning})" for c in codes if c)


def _cross_field_problems(data: dict, source: str) -> list[ProtocolProblem]:
    structures = data["structures"]
    problems = []
    problems += _duplicates([(f"$.structures[{i}].id", s["id"]) for i, s in enumerate(structures)], "id", source)
    # Segments are matched to structures by name without regard to case, so names must differ beyond case.
    names = [(f"$.structures[{i}].name", s["name"].lower()) for i, s in enumerate(structures)]
    problems += _duplicates(names, "name", source)
    problems += _duplicates(
        [(f"$.structures[{i}].color", s["color"].lower()) for i, s in enumerate(structures)], "colour", source
    )
    problems += _duplicates(
        [
            (f"$.structures[{i}].terminology", _concept_text(Terminology.from_json(s["terminology"])))
            for i, s in enumerate(structures)
        ],
        "terminology (type, modifier and region codes)",
        source,
    )
    tg263 = [(f"$.structures[{i}].tg263", s["tg263"]) for i, s in enumerate(structures) if "tg263" in s]
    problems += _duplicates(tg263, "TG-263 name", source)
    ids = {s["id"] for s in structures}
    for i, s in enumerate(structures):
        base = f"$.structures[{i}]"
        rules = s.get("rules", {})
        references = [
            (f"{base}.rules.{k}.structure", rules[k]["structure"]) for k in ("inside", "outside") if k in rules
        ]
        if "midline" in rules.get("laterality", {}):
            references.append((f"{base}.rules.laterality.midline", rules["laterality"]["midline"]))
        for path, ref in references:
            if ref == s["id"]:
                problems.append(ProtocolProblem(source, path, f"structure '{ref}' cannot refer to itself"))
            elif ref not in ids:
                known = ", ".join(sorted(ids))
                problems.append(ProtocolProblem(source, path, f"no structure with id '{ref}' (known: {known})"))
        volume = rules.get("volumeMl", {})
        if "min" in volume and "max" in volume and volume["min"] > volume["max"]:
            problems.append(
                ProtocolProblem(
                    source, f"{base}.rules.volumeMl", f"min {volume['min']} is larger than max {volume['max']}"
                )
            )
        kind = s.get("kind", "segment")
        content_rules = sorted(set(rules) & {"volumeMl", "maxComponents", "inside", "outside"})
        if kind != "segment" and content_rules:
            problems.append(
                ProtocolProblem(
                    source, f"{base}.rules.{content_rules[0]}", f"applies to segments only, not to a {kind}"
                )
            )
        agreement = s.get("agreement")
        if agreement:
            if agreement["metric"] in ("dice", "surfaceDice") and agreement["threshold"] > 1:
                problems.append(
                    ProtocolProblem(
                        source,
                        f"{base}.agreement.threshold",
                        f"{agreement['metric']} is between 0 and 1, got {agreement['threshold']}",
                    )
                )
            if agreement["metric"] == "surfaceDice" and "toleranceMm" not in agreement:
                problems.append(
                    ProtocolProblem(
                        source, f"{base}.agreement", "surfaceDice needs 'toleranceMm' (the tolerance in mm)"
                    )
                )
    questions = data.get("questions", [])
    problems += _duplicates([(f"$.questions[{i}].id", q["id"]) for i, q in enumerate(questions)], "id", source)
    return problems


def validate_protocol_data(data: Any, source: str = "<memory>") -> list[ProtocolProblem]:
    """All problems of already parsed JSON; empty when the protocol is valid."""
    problems = _schema_problems(data, source)
    if problems:
        return problems  # cross-field checks assume the shape is right
    return _cross_field_problems(data, source)


def parse_protocol(text: str, source: str = "<memory>") -> Protocol:
    """Parse and validate protocol JSON text; raise ``ProtocolError`` listing every problem."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            [ProtocolProblem(source, "$", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")]
        ) from None
    problems = validate_protocol_data(data, source)
    if problems:
        raise ProtocolError(problems)
    return Protocol.from_json(data, source=source)


def load_protocol(path: str | Path) -> Protocol:
    """Load and validate a protocol file; raise ``ProtocolError`` naming the file and JSON path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProtocolError([ProtocolProblem(str(path), "$", f"cannot read file: {reason}")]) from None
    return parse_protocol(text, source=str(path))


def bundled_protocol_paths() -> list[Path]:
    return sorted(BUNDLED_PROTOCOLS_DIR.glob("*.json"))


def bundled_protocols() -> list[Protocol]:
    return [load_protocol(p) for p in bundled_protocol_paths()]


def bundled_protocol(protocol_id: str) -> Protocol:
    """A bundled protocol by id, e.g. ``abdominal-organs``."""
    for protocol in bundled_protocols():
        if protocol.id == protocol_id:
            return protocol
    known = ", ".join(p.id for p in bundled_protocols())
    raise KeyError(f"no bundled protocol '{protocol_id}' (bundled: {known})")
