"""Checks a reader's masks against a protocol: completion and sanity rules.

Masks are boolean numpy arrays in array order (k, j, i), all on one voxel grid described by
``ijk_to_ras`` (4x4, column vector (i, j, k, 1) to RAS millimetres), the way Slicer stores
volumes. Nothing here knows about Slicer; the mrml layer hands the masks over.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from .protocol import Protocol, Structure

PENDING = "pending"  # nothing drawn yet
DRAFTED = "drafted"  # drawn, but a blocking rule fails
COMPLETE = "complete"  # drawn and every blocking rule passes
ABSENT = "absent"  # an optional structure the reader declared not present in this image
STATES = (PENDING, DRAFTED, COMPLETE, ABSENT)


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule on one structure. ``passed`` is None when it could not be evaluated."""

    rule: str
    passed: bool | None
    severity: str
    message: str
    value: float | None = None

    @property
    def blocks(self) -> bool:
        return self.passed is False and self.severity == "error"


@dataclass
class StructureCheck:
    structure_id: str
    name: str
    required: bool
    state: str
    voxels: int = 0
    volume_ml: float = 0.0
    components: int = 0
    results: list[RuleResult] = field(default_factory=list)

    @property
    def problems(self) -> list[RuleResult]:
        return [r for r in self.results if r.passed is False]

    @property
    def blocking(self) -> list[RuleResult]:
        return [r for r in self.results if r.blocks]


@dataclass
class ProtocolCheck:
    protocol: str
    structures: list[StructureCheck]
    extra_segments: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """True when the protocol is met and the case may be submitted."""
        return not self.blocking_messages()

    def structure(self, structure_id: str) -> StructureCheck:
        return next(s for s in self.structures if s.structure_id == structure_id)

    def blocking_messages(self) -> list[str]:
        return [f"{s.name}: {r.message}" for s in self.structures for r in s.blocking]

    def summary(self) -> str:
        done = sum(s.state in (COMPLETE, ABSENT) for s in self.structures)
        verdict = "ready to submit" if self.ready else f"{len(self.blocking_messages())} blocking problem(s)"
        return f"{self.protocol}: {done}/{len(self.structures)} structures complete, {verdict}"

    def to_json(self) -> dict:
        return {
            "protocol": self.protocol,
            "ready": self.ready,
            "extraSegments": self.extra_segments,
            "structures": [asdict(s) for s in self.structures],
        }


def voxel_volume_ml(ijk_to_ras: np.ndarray) -> float:
    return abs(float(np.linalg.det(np.asarray(ijk_to_ras)[:3, :3]))) / 1000.0


def count_components(mask: np.ndarray) -> int:
    """Connected components, voxels touching by face, edge or corner counting as connected."""
    if not mask.any():
        return 0
    crop = mask[_bounding_box(mask)]
    image = sitk.GetImageFromArray(crop.astype(np.uint8))
    labelled = sitk.ConnectedComponent(image, True)  # keep a reference: the array view borrows its memory
    return int(sitk.GetArrayViewFromImage(labelled).max())


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    slices = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        present = np.flatnonzero(mask.any(axis=other))
        slices.append(slice(present[0], present[-1] + 1))
    return tuple(slices)


def _centroid_ras(mask: np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    kji = np.array([idx.mean() for idx in np.nonzero(mask)])
    ijk1 = np.append(kji[::-1], 1.0)
    return (np.asarray(ijk_to_ras) @ ijk1)[:3]


def _image_center_ras(shape: tuple[int, ...], ijk_to_ras: np.ndarray) -> np.ndarray:
    ijk1 = np.append((np.array(shape[::-1], dtype=float) - 1) / 2.0, 1.0)
    return (np.asarray(ijk_to_ras) @ ijk1)[:3]


def _rule_results(
    structure: Structure,
    mask: np.ndarray,
    volume_ml: float,
    components: int,
    masks: Mapping[str, np.ndarray | None],
    protocol: Protocol,
    ijk_to_ras: np.ndarray,
) -> list[RuleResult]:
    rules = structure.rules
    severity = rules.severity
    results = []
    low, high = rules.volume_ml_min, rules.volume_ml_max
    if low is not None or high is not None:
        ok = (low is None or volume_ml >= low) and (high is None or volume_ml <= high)
        expected = f"{low if low is not None else 0:g}-{high:g} ml" if high is not None else f">= {low:g} ml"
        results.append(
            RuleResult("volumeMl", ok, severity, f"volume {volume_ml:.1f} ml, expected {expected}", volume_ml)
        )
    if rules.max_components is not None:
        ok = components <= rules.max_components
        results.append(
            RuleResult(
                "maxComponents",
                ok,
                severity,
                f"{components} connected component(s), at most {rules.max_components} allowed",
                components,
            )
        )
    for rule_name, ref in (("inside", rules.inside), ("outside", rules.outside)):
        if ref is None:
            continue
        other_name = protocol.structure(ref.structure).name
        other = masks.get(ref.structure)
        if other is None or not other.any():
            results.append(RuleResult(rule_name, None, severity, f"cannot check: '{other_name}' is empty"))
            continue
        fraction = float(np.count_nonzero(mask & other)) / float(np.count_nonzero(mask))
        if rule_name == "inside":
            ok = fraction >= ref.fraction
            message = f"{fraction:.1%} inside {other_name}, at least {ref.fraction:.0%} required"
        else:
            ok = fraction <= ref.fraction
            message = f"{fraction:.1%} overlaps {other_name}, at most {ref.fraction:.0%} allowed"
        results.append(RuleResult(rule_name, ok, severity, message, fraction))
    if rules.laterality is not None:
        side = rules.laterality.side
        if rules.laterality.midline:
            midline_mask = masks.get(rules.laterality.midline)
            midline_name = protocol.structure(rules.laterality.midline).name
            if midline_mask is None or not midline_mask.any():
                results.append(RuleResult("laterality", None, severity, f"cannot check: '{midline_name}' is empty"))
                return results
            midline_x = _centroid_ras(midline_mask, ijk_to_ras)[0]
            reference = f"the centre of {midline_name}"
        else:
            midline_x = _image_center_ras(mask.shape, ijk_to_ras)[0]
            reference = "the image centre"
        offset = _centroid_ras(mask, ijk_to_ras)[0] - midline_x  # RAS: +x points to the patient's right
        found = "right" if offset > 0 else "left"
        results.append(
            RuleResult(
                "laterality",
                found == side,
                severity,
                f"centre {abs(offset):.1f} mm to the patient's {found} of {reference}, expected {side}",
                float(offset),
            )
        )
    return results


def check_masks(
    protocol: Protocol,
    masks: Mapping[str, np.ndarray | None],
    ijk_to_ras: np.ndarray,
    declared_absent: Collection[str] = (),
    extra_segments: Collection[str] = (),
) -> ProtocolCheck:
    """Evaluate completion and every rule of ``protocol`` on masks keyed by structure id.

    A structure missing from ``masks`` counts as empty. ``declared_absent`` holds ids of optional
    structures the reader marked as not present in the image.
    """
    shapes = {m.shape for m in masks.values() if m is not None}
    if len(shapes) > 1:
        raise ValueError(f"masks are on different grids: shapes {sorted(shapes)}")
    unit_ml = voxel_volume_ml(ijk_to_ras)
    checks = []
    for structure in protocol.structures:
        mask = masks.get(structure.id)
        voxels = int(np.count_nonzero(mask)) if mask is not None else 0
        check = StructureCheck(structure.id, structure.name, structure.required, PENDING, voxels, voxels * unit_ml)
        if structure.id in declared_absent:
            if structure.required:
                check.results.append(
                    RuleResult("required", False, "error", "required structure cannot be declared absent")
                )
            elif voxels:
                check.results.append(
                    RuleResult("absent", False, "error", f"declared absent but {voxels} voxels are drawn")
                )
            else:
                check.state = ABSENT
            checks.append(check)
            continue
        if structure.kind != "segment":
            if structure.required:
                check.results.append(
                    RuleResult("kind", False, "error", f"{structure.kind} structures cannot be checked yet")
                )
            checks.append(check)
            continue
        if not voxels:
            if structure.required:
                check.results.append(RuleResult("required", False, "error", "required structure is empty"))
            checks.append(check)
            continue
        check.components = count_components(mask)
        check.results = _rule_results(structure, mask, check.volume_ml, check.components, masks, protocol, ijk_to_ras)
        check.state = DRAFTED if check.blocking else COMPLETE
        checks.append(check)
    return ProtocolCheck(protocol.label, checks, sorted(extra_segments))
