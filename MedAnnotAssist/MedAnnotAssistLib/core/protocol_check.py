"""Checks a reader's masks against a protocol: completion and sanity rules.

Masks are boolean numpy arrays in array order (k, j, i), all on one voxel grid described by
``ijk_to_ras`` (4x4, column vector (i, j, k, 1) to RAS millimetres), the way Slicer stores
volumes. Nothing here knows about Slicer; the mrml layer hands the masks over (``check_masks``), the
queue server a file's label layers (``check_reader``). Both end in ``check_crops``: every rule is
evaluated on each structure's bounding box, so a large grid costs one pass over the labels, not one
full-size mask per structure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import SimpleITK as sitk

from .protocol import Protocol, Structure

if TYPE_CHECKING:
    from .labelio import ReaderLabels

PENDING = "pending"  # nothing drawn yet
DRAFTED = "drafted"  # drawn, but a blocking rule fails
COMPLETE = "complete"  # drawn and every blocking rule passes
ABSENT = "absent"  # an optional structure the reader declared not present in this image
STATES = (PENDING, DRAFTED, COMPLETE, ABSENT)

# every rule id a result can carry: the protocol's rules, then the checks that always apply
RULES = ("volumeMl", "maxComponents", "inside", "outside", "laterality", "required", "absent", "kind")


@dataclass(frozen=True)
class RuleResult:
    """Outcome of one rule on one structure. ``passed`` is None when it could not be evaluated."""

    rule: str
    passed: bool | None
    severity: str
    message: str
    value: float | None = None
    expected: str = ""  # what passes, in words ("20-200 ml", "at most 1"), for clients that show it apart

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


@dataclass(frozen=True)
class MaskCrop:
    """A structure's mask cut to its bounding box, and where the box starts on the full grid (k, j, i)."""

    mask: np.ndarray
    start: tuple[int, ...]

    @classmethod
    def of(cls, mask: np.ndarray | None) -> MaskCrop | None:
        """The crop of a full-grid mask (a view, not a copy); None when nothing is drawn."""
        if mask is None or not mask.any():
            return None
        box = _bounding_box(mask)
        return cls(mask[box], tuple(s.start for s in box))

    @property
    def stop(self) -> tuple[int, ...]:
        return tuple(start + size for start, size in zip(self.start, self.mask.shape, strict=True))

    def overlap(self, other: MaskCrop) -> int:
        """Voxels drawn in both, counted where the two boxes meet."""
        low = np.maximum(self.start, other.start)
        high = np.minimum(self.stop, other.stop)
        if np.any(low >= high):
            return 0
        mine = tuple(slice(lo - s, hi - s) for lo, hi, s in zip(low, high, self.start, strict=True))
        theirs = tuple(slice(lo - s, hi - s) for lo, hi, s in zip(low, high, other.start, strict=True))
        return int(np.count_nonzero(self.mask[mine] & other.mask[theirs]))

    @cached_property
    def centroid_kji(self) -> np.ndarray:
        """Mean voxel index (k, j, i) on the full grid, from per-axis counts (no index arrays)."""
        plane = np.count_nonzero(self.mask, axis=0)  # (j, i)
        counts = (np.count_nonzero(self.mask, axis=(1, 2)), plane.sum(axis=1), plane.sum(axis=0))
        total = int(counts[0].sum())
        return np.array(
            [
                int(np.dot(count, np.arange(count.size))) / total + start
                for count, start in zip(counts, self.start, strict=True)
            ]
        )

    def centroid_ras(self, ijk_to_ras: np.ndarray) -> np.ndarray:
        return (np.asarray(ijk_to_ras) @ np.append(self.centroid_kji[::-1], 1.0))[:3]


def count_components(mask: np.ndarray) -> int:
    """Connected components, voxels touching by face, edge or corner counting as connected."""
    if not mask.any():
        return 0
    return _components(mask[_bounding_box(mask)])


def _components(crop: np.ndarray) -> int:
    """Components of a cropped mask: the ``cc3d`` package when installed (a few times quicker on large
    organs), else SimpleITK; both count the same 26-connected components."""
    try:
        import cc3d
    except ImportError:
        cc3d = None
    if cc3d is not None:
        _labels, count = cc3d.connected_components(crop, connectivity=26, return_N=True, binary_image=True)
        return int(count)
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


def _image_center_ras(shape: tuple[int, ...], ijk_to_ras: np.ndarray) -> np.ndarray:
    ijk1 = np.append((np.array(shape[::-1], dtype=float) - 1) / 2.0, 1.0)
    return (np.asarray(ijk_to_ras) @ ijk1)[:3]


def _rule_results(
    structure: Structure,
    crop: MaskCrop,
    volume_ml: float,
    components: int,
    crops: Mapping[str, MaskCrop | None],
    protocol: Protocol,
    shape: tuple[int, ...],
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
            RuleResult("volumeMl", ok, severity, f"volume {volume_ml:.1f} ml, expected {expected}", volume_ml, expected)
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
                f"at most {rules.max_components}",
            )
        )
    for rule_name, ref in (("inside", rules.inside), ("outside", rules.outside)):
        if ref is None:
            continue
        other_name = protocol.structure(ref.structure).name
        other = crops.get(ref.structure)
        if other is None:
            results.append(RuleResult(rule_name, None, severity, f"cannot check: '{other_name}' is empty"))
            continue
        fraction = float(crop.overlap(other)) / float(np.count_nonzero(crop.mask))
        if rule_name == "inside":
            ok = fraction >= ref.fraction
            message = f"{fraction:.1%} inside {other_name}, at least {ref.fraction:.0%} required"
            expected = f"at least {ref.fraction:.0%} inside {other_name}"
        else:
            ok = fraction <= ref.fraction
            message = f"{fraction:.1%} overlaps {other_name}, at most {ref.fraction:.0%} allowed"
            expected = f"at most {ref.fraction:.0%} overlap with {other_name}"
        results.append(RuleResult(rule_name, ok, severity, message, fraction, expected))
    if rules.laterality is not None:
        side = rules.laterality.side
        if rules.laterality.midline:
            midline = crops.get(rules.laterality.midline)
            midline_name = protocol.structure(rules.laterality.midline).name
            if midline is None:
                results.append(RuleResult("laterality", None, severity, f"cannot check: '{midline_name}' is empty"))
                return results
            midline_x = midline.centroid_ras(ijk_to_ras)[0]
            reference = f"the centre of {midline_name}"
        else:
            midline_x = _image_center_ras(shape, ijk_to_ras)[0]
            reference = "the image centre"
        offset = crop.centroid_ras(ijk_to_ras)[0] - midline_x  # RAS: +x points to the patient's right
        found = "right" if offset > 0 else "left"
        results.append(
            RuleResult(
                "laterality",
                found == side,
                severity,
                f"centre {abs(offset):.1f} mm to the patient's {found} of {reference}, expected {side}",
                float(offset),
                f"the patient's {side} of {reference}",
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
    """Evaluate completion and every rule of ``protocol`` on full-grid masks keyed by structure id.

    A structure missing from ``masks`` counts as empty. ``declared_absent`` holds ids of optional
    structures the reader marked as not present in the image.
    """
    shapes = {m.shape for m in masks.values() if m is not None}
    if len(shapes) > 1:
        raise ValueError(f"masks are on different grids: shapes {sorted(shapes)}")
    crops = {structure_id: MaskCrop.of(mask) for structure_id, mask in masks.items()}
    shape = next(iter(shapes)) if shapes else (0, 0, 0)
    return check_crops(protocol, crops, shape, ijk_to_ras, declared_absent, extra_segments)


# find_objects keeps one slot per label value up to the largest: beyond this, compare label by label
MAX_LABEL_FOR_BOXES = 65535


def reader_crops(reader: ReaderLabels) -> dict[str, MaskCrop | None]:
    """Each structure's crop from a reader's label layers: one pass over each layer finds every box."""
    return layer_crops(reader.layers, reader.segments)


def layer_crops(layers: Sequence[np.ndarray], segments: Mapping[str, tuple[int, int]]) -> dict[str, MaskCrop | None]:
    """Each structure's crop from label layers (``segments``: structure id -> (layer, label value))."""
    from scipy import ndimage

    by_layer: dict[int, list[tuple[str, int]]] = {}
    for structure_id, (layer, value) in segments.items():
        by_layer.setdefault(layer, []).append((structure_id, value))
    crops: dict[str, MaskCrop | None] = {}
    for layer, wanted in by_layer.items():
        labels = layers[layer]
        values = [value for _, value in wanted]
        if min(values) < 1 or max(values) > MAX_LABEL_FOR_BOXES:
            crops.update((structure_id, MaskCrop.of(labels == value)) for structure_id, value in wanted)
            continue
        boxes = ndimage.find_objects(labels, max_label=max(values))
        for structure_id, value in wanted:
            box = boxes[value - 1]
            crops[structure_id] = None if box is None else MaskCrop(labels[box] == value, tuple(s.start for s in box))
    return crops


def check_reader(protocol: Protocol, reader: ReaderLabels, declared_absent: Collection[str] = ()) -> ProtocolCheck:
    """The check of a segmentation file read by ``labelio.read_reader``, as ``check_masks`` on its masks."""
    crops = reader_crops(reader)
    shape = reader.layers[0].shape
    return check_crops(
        protocol, crops, shape, reader.geometry.ijk_to_ras, declared_absent, extra_segments=reader.unmatched
    )


def check_crops(
    protocol: Protocol,
    crops: Mapping[str, MaskCrop | None],
    shape: tuple[int, ...],
    ijk_to_ras: np.ndarray,
    declared_absent: Collection[str] = (),
    extra_segments: Collection[str] = (),
) -> ProtocolCheck:
    """The rules engine: ``crops`` by structure id (None or missing: nothing drawn) on a grid of ``shape``."""
    unit_ml = voxel_volume_ml(ijk_to_ras)
    checks = []
    for structure in protocol.structures:
        crop = crops.get(structure.id)
        voxels = int(np.count_nonzero(crop.mask)) if crop is not None else 0
        check = StructureCheck(structure.id, structure.name, structure.required, PENDING, voxels, voxels * unit_ml)
        if structure.id in declared_absent:
            if structure.required:
                check.results.append(
                    RuleResult(
                        "required", False, "error", "required structure cannot be declared absent", None, "drawn"
                    )
                )
            elif voxels:
                check.results.append(
                    RuleResult(
                        "absent", False, "error", f"declared absent but {voxels} voxels are drawn", voxels, "0 voxels"
                    )
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
                check.results.append(RuleResult("required", False, "error", "required structure is empty", 0, "drawn"))
            checks.append(check)
            continue
        check.components = _components(crop.mask)
        check.results = _rule_results(
            structure, crop, check.volume_ml, check.components, crops, protocol, shape, ijk_to_ras
        )
        check.state = DRAFTED if check.blocking else COMPLETE
        checks.append(check)
    return ProtocolCheck(protocol.label, checks, sorted(extra_segments))
