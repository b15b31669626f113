"""The consensus of N readers of one case: per-structure agreement, fusion, disagreement and verdicts.

For each protocol structure: the union bounding box of every reader's mask (plus a margin) is the only
region touched; pairwise metrics (``metrics``), STAPLE or majority vote (``fusion``), the disagreement
map and the verdict against the protocol's ``agreement`` setting are computed there. Whole-volume
outputs (the consensus labelmap and the disagreement map) are written into full-size arrays at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import fusion
from .jobs import check_cancel
from .labelio import ReaderLabels, check_same_grid
from .metrics import PairMetrics, _json_number, pairwise_metrics, union_box
from .protocol import Protocol, Structure

FUSIONS = ("staple", "majority", "multilabel-staple")
AGREED, ADJUDICATE = "agreed", "needs adjudication"
MARGIN = 2  # voxels around the union bounding box


@dataclass
class StructureConsensus:
    structure: Structure
    readers: list[str]
    empty_readers: list[str]  # readers whose mask of this structure is empty
    missing_readers: list[str]  # readers without a segment for it at all (counted as empty)
    pairwise: list[PairMetrics]
    tolerance_mm: float
    verdict: str
    reason: str
    box: tuple[slice, ...] | None = None
    masks: list[np.ndarray] = field(default_factory=list, repr=False)  # readers' masks in ``box``
    consensus: np.ndarray | None = field(default=None, repr=False)  # bool, in ``box``
    probability: np.ndarray | None = field(default=None, repr=False)  # float32, in ``box``
    disagreement: np.ndarray | None = field(default=None, repr=False)  # float32, in ``box``
    sensitivity: tuple[float, ...] = ()
    specificity: tuple[float, ...] = ()
    consensus_volume_ml: float = 0.0
    disagreement_volume_ml: float = 0.0  # volume where at least one reader differs from the consensus

    def consensus_full(self, shape) -> np.ndarray:
        """This structure's consensus mask on the whole grid (before overlaps with others are resolved)."""
        full = np.zeros(shape, bool)
        if self.box is not None and self.consensus is not None:
            full[self.box] = self.consensus
        return full

    def as_dict(self) -> dict:
        agreement = self.structure.agreement
        return {
            "structure_id": self.structure.id,
            "required": self.structure.required,
            "verdict": self.verdict,
            "reason": self.reason,
            "agreement": None
            if agreement is None
            else {"metric": agreement.metric, "threshold": agreement.threshold, "tolerance_mm": self.tolerance_mm},
            "consensus_volume_ml": round(self.consensus_volume_ml, 4),
            "disagreement_volume_ml": round(self.disagreement_volume_ml, 4),
            "empty_readers": self.empty_readers,
            "missing_readers": self.missing_readers,
            "pairwise": [pair.as_dict() for pair in self.pairwise],
            "staple": [
                {"reader": name, "sensitivity": _json_number(p), "specificity": _json_number(q)}
                for name, p, q in zip(self.readers, self.sensitivity, self.specificity, strict=False)
            ],
            "bounding_box_ijk": None
            if self.box is None
            else [[s.start for s in reversed(self.box)], [s.stop - 1 for s in reversed(self.box)]],
        }


@dataclass
class ConsensusResult:
    protocol: Protocol
    readers: list[ReaderLabels]
    fusion: str
    convention: str
    structures: list[StructureConsensus]
    labels: np.ndarray = field(repr=False)  # consensus labelmap: value = index in ``structures`` + 1
    disagreement: np.ndarray = field(repr=False)  # float32, fraction of readers differing (max over structures)
    seconds: float = 0.0

    @property
    def spacing(self) -> tuple[float, ...]:
        return self.readers[0].geometry.array_spacing

    def structure(self, structure_id: str) -> StructureConsensus:
        return next(item for item in self.structures if item.structure.id == structure_id)

    def as_dict(self) -> dict:
        return {
            "format": "medannotassist.agreement/1",
            "protocol": {"id": self.protocol.id, "version": self.protocol.version, "checksum": self.protocol.checksum},
            "readers": [
                {"name": r.name, "file": str(r.path) if r.path else None, "unmatched_segments": r.unmatched}
                for r in self.readers
            ],
            "fusion": self.fusion,
            "surface_convention": self.convention,
            "grid": {
                "size": list(self.readers[0].geometry.size),
                "spacing_mm": list(self.readers[0].geometry.spacing),
            },
            "summary": {
                "structures": len(self.structures),
                "agreed": sum(s.verdict == AGREED for s in self.structures),
                "needs_adjudication": [s.structure.name for s in self.structures if s.verdict == ADJUDICATE],
                "seconds": round(self.seconds, 3),
            },
            "structures": {s.structure.name: s.as_dict() for s in self.structures},
        }


def _verdict(structure: Structure, names, empty, pairs: list[PairMetrics]) -> tuple[str, str]:
    if len(names) < 2:
        return ADJUDICATE, "one reader: agreement cannot be measured"
    if len(empty) == len(names):
        return AGREED, "every reader left it empty (absent)"
    if empty:
        return ADJUDICATE, f"empty for {', '.join(empty)} but drawn by the others"
    agreement = structure.agreement
    if agreement is None:
        return AGREED, "the protocol sets no agreement for it"
    if agreement.metric == "hd95":
        worst = max(pairs, key=lambda pair: pair.hd95_mm)
        value, ok = worst.hd95_mm, worst.hd95_mm <= agreement.threshold
        text = f"worst HD95 {value:.2f} mm ({worst.a} vs {worst.b}), at most {agreement.threshold:g} mm allowed"
    else:
        key = "dice" if agreement.metric == "dice" else "surface_dice"
        worst = min(pairs, key=lambda pair: getattr(pair, key))
        value = getattr(worst, key)
        ok = value >= agreement.threshold
        label = "Dice" if key == "dice" else f"surface Dice at {worst.tolerance_mm:g} mm"
        text = f"worst {label} {value:.3f} ({worst.a} vs {worst.b}), at least {agreement.threshold:g} required"
    return (AGREED if ok else ADJUDICATE), text


def compute_consensus(
    readers: list[ReaderLabels],
    protocol: Protocol,
    fusion_method: str = "staple",
    convention: str = "surfels",
    empty: str = "defined",
    default_tolerance_mm: float = 2.0,
    percent: float = 95.0,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ConsensusResult:
    """Agreement, fusion and verdicts for every protocol structure at least one reader drew or named."""
    if not readers:
        raise ValueError("consensus needs at least one reader")
    if fusion_method not in FUSIONS:
        raise ValueError(f"fusion: expected one of {', '.join(FUSIONS)}, got {fusion_method!r}")
    names = [reader.name for reader in readers]
    if len(set(names)) != len(names):
        raise ValueError(f"reader names must be unique, got {', '.join(names)}")
    check_same_grid(readers)
    started = time.perf_counter()
    shape = readers[0].layers[0].shape
    spacing = readers[0].geometry.array_spacing
    unit = float(np.prod(spacing)) / (1000.0 if len(spacing) == 3 else 100.0)
    boxes = [[ndimage.find_objects(layer) for layer in reader.layers] for reader in readers]

    def box_of(r: int, structure_id: str):
        if structure_id not in readers[r].segments:
            return None
        layer, value = readers[r].segments[structure_id]
        found = boxes[r][layer]
        return found[value - 1] if 0 < value <= len(found) else None

    wanted = [s for s in protocol.structures if any(s.id in reader.segments for reader in readers)]
    results: list[StructureConsensus] = []
    for index, structure in enumerate(wanted):
        check_cancel(cancel, "the consensus")
        if progress is not None:
            progress(index / max(len(wanted), 1), structure.name)
        tolerance = (structure.agreement.tolerance_mm if structure.agreement else None) or default_tolerance_mm
        box = union_box([box_of(r, structure.id) for r in range(len(readers))], shape, margin=MARGIN)
        crop_box = box if box is not None else tuple(slice(0, 1) for _ in shape)
        masks = [reader.mask(structure.id, crop_box) for reader in readers]
        pairs = pairwise_metrics(masks, spacing, names, tolerance, percent, convention, empty)
        empty_readers = [n for n, m in zip(names, masks, strict=True) if not m.any()]
        missing = [reader.name for reader in readers if structure.id not in reader.segments]
        verdict, reason = _verdict(structure, names, empty_readers, pairs)
        results.append(
            StructureConsensus(structure, names, empty_readers, missing, pairs, tolerance, verdict, reason, box, masks)
        )
        if box is not None and fusion_method != "multilabel-staple":
            _fuse(results[-1], fusion_method, outside=int(np.prod(shape)) - masks[0].size, unit=unit)
    if fusion_method == "multilabel-staple":
        _fuse_multilabel(results, readers, shape, unit)
    labels, disagreement = _whole_volume(results, shape)
    if progress is not None:
        progress(1.0, "done")
    return ConsensusResult(
        protocol, readers, fusion_method, convention, results, labels, disagreement, time.perf_counter() - started
    )


def _fuse(item: StructureConsensus, method: str, outside: int, unit: float) -> None:
    result = fusion.staple(item.masks, outside_voxels=outside)
    item.sensitivity, item.specificity = result.sensitivity, result.specificity
    if method == "staple":
        item.probability = result.probability
        item.consensus = result.estimate()
    else:
        item.probability = fusion.vote_fraction(item.masks)
        item.consensus = fusion.majority_vote(item.masks)
    _finish(item, unit)


def _finish(item: StructureConsensus, unit: float) -> None:
    item.disagreement = fusion.disagreement(item.masks, item.consensus)
    item.consensus_volume_ml = int(np.count_nonzero(item.consensus)) * unit
    item.disagreement_volume_ml = int(np.count_nonzero(item.disagreement)) * unit


def _fuse_multilabel(results: list[StructureConsensus], readers, shape, unit) -> None:
    """Multi-label STAPLE on the union box of all structures; each reader's labelmap is painted in
    protocol order (a later structure wins where a reader's segments overlap)."""
    drawn = [item for item in results if item.box is not None]
    box = union_box([item.box for item in drawn], shape, margin=0)
    if box is None:
        return
    labelmaps = []
    for reader in readers:
        labels = np.zeros(tuple(s.stop - s.start for s in box), np.uint16)
        for value, item in enumerate(drawn, start=1):
            labels[reader.mask(item.structure.id, box)] = value
        labelmaps.append(labels)
    fused = fusion.multilabel_staple(labelmaps)
    for value, item in enumerate(drawn, start=1):
        local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(item.box, box, strict=True))
        item.consensus = fused[local] == value
        item.probability = fusion.vote_fraction(item.masks)
        _finish(item, unit)


def _whole_volume(results: list[StructureConsensus], shape) -> tuple[np.ndarray, np.ndarray]:
    """Consensus labelmap (where two structures claim a voxel, the higher probability wins) and the
    disagreement map (the largest fraction of readers differing from the consensus, over structures)."""
    labels = np.zeros(shape, np.uint8 if len(results) < 255 else np.uint16)
    best = np.zeros(shape, np.float32)
    disagreement = np.zeros(shape, np.float32)
    for value, item in enumerate(results, start=1):
        if item.box is None or item.consensus is None:
            continue
        claim = item.consensus & (item.probability > best[item.box])
        labels[item.box][claim] = value
        best[item.box][claim] = item.probability[claim]
        np.maximum(disagreement[item.box], item.disagreement, out=disagreement[item.box])
    return labels, disagreement
