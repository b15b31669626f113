"""Fusing readers' masks into a consensus: majority vote, STAPLE, multi-label STAPLE, disagreement.

STAPLE (Warfield et al. 2004) follows ITK's ``STAPLEImageFilter`` step for step (start, prior, order of the
steps, stopping rule) and is solved on the histogram of decision patterns: with R readers a voxel's
decisions form one of 2**R patterns, every voxel with the same pattern gets the same posterior, so the
EM iterations run over at most 2**R weighted rows instead of every voxel. Voxels outside the crop,
where every reader said background, are one more count on the all-background pattern. The result is
ITK's whole-volume STAPLE computed on the structure's bounding box only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_STOP = 1e-14  # ITK stops when every squared change of sensitivity and specificity is at most this


@dataclass(frozen=True)
class StapleResult:
    probability: np.ndarray  # float32, posterior probability of the structure per voxel of the crop
    sensitivity: tuple[float, ...]  # per reader
    specificity: tuple[float, ...]
    prior: float
    iterations: int
    converged: bool

    def estimate(self, threshold: float = 0.5) -> np.ndarray:
        return self.probability >= threshold


def _stack(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    masks = [np.asarray(mask).astype(bool, copy=False) for mask in masks]
    if not masks:
        raise ValueError("masks: expected at least one reader's mask")
    for index, mask in enumerate(masks[1:], start=1):
        if mask.shape != masks[0].shape:
            raise ValueError(f"masks[{index}]: shape {mask.shape} differs from masks[0] {masks[0].shape}")
    return masks


def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Voxels marked by more than half of the readers. A tie (an even number of readers split in half) is
    background: two readers give their intersection, four readers need three votes."""
    masks = _stack(masks)
    votes = np.zeros(masks[0].shape, np.uint16)
    for mask in masks:
        votes += mask
    return votes * 2 > len(masks)


def vote_fraction(masks: Sequence[np.ndarray]) -> np.ndarray:
    """Fraction of readers marking each voxel (float32), the simplest per-voxel consensus probability."""
    masks = _stack(masks)
    votes = np.zeros(masks[0].shape, np.float32)
    for mask in masks:
        votes += mask
    return votes / len(masks)


def disagreement(masks: Sequence[np.ndarray], consensus: np.ndarray) -> np.ndarray:
    """Fraction of readers whose decision differs from the consensus at each voxel (float32, 0..1)."""
    masks = _stack(masks)
    consensus = np.asarray(consensus, bool)
    differ = np.zeros(consensus.shape, np.float32)
    for mask in masks:
        differ += mask != consensus
    return differ / len(masks)


def _patterns(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-voxel pattern index, the distinct patterns as rows of decisions, their counts)."""
    if len(masks) <= 20:
        code = np.zeros(masks[0].shape, np.uint32)
        for bit, mask in enumerate(masks):
            code |= mask.astype(np.uint32) << np.uint32(bit)
        counts = np.bincount(code.ravel(), minlength=2 ** len(masks))
        present = np.flatnonzero(counts)
        lookup = np.zeros(counts.size, np.int64)
        lookup[present] = np.arange(present.size)
        rows = ((present[:, None] >> np.arange(len(masks))) & 1).astype(bool)
        return lookup[code], rows, counts[present].astype(np.float64)
    flat = np.stack([mask.ravel() for mask in masks], axis=1)
    rows, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    return inverse.reshape(masks[0].shape), rows, counts.astype(np.float64)


def staple(
    masks: Sequence[np.ndarray],
    outside_voxels: int = 0,
    confidence_weight: float = 1.0,
    max_iterations: int = 100_000,
) -> StapleResult:
    """Binary STAPLE of the readers' masks of one structure, as ITK's ``STAPLEImageFilter`` computes it.

    ``outside_voxels`` counts the voxels of the whole image that lie outside these (cropped) masks, where
    every reader said background; with it the result equals STAPLE over the whole image. The prior of the
    structure is the readers' mean vote fraction over the whole image times ``confidence_weight`` (ITK's
    and SimpleITK's default 1). The weights start at the vote fraction; each iteration estimates every
    reader's sensitivity and specificity from them (M-step), then the posteriors (E-step); it stops after
    an iteration (not the first) in which no sensitivity or specificity changed by more than 1e-7.

    Where no reader marked anything (or every reader marked everything) ITK answers NaN everywhere; here
    the probability is the readers' unanimous answer, the specificity (sensitivity) 1 and the rate with
    nothing to measure, sensitivity (specificity), NaN.
    """
    masks = _stack(masks)
    if not confidence_weight > 0:
        raise ValueError(f"confidence_weight: expected a number > 0, got {confidence_weight!r}")
    index, rows, counts = _patterns(masks)
    if outside_voxels:
        if rows.size and not rows[0].any():
            counts[0] += outside_voxels
        else:
            rows = np.vstack([np.zeros((1, rows.shape[1]), bool), rows])
            counts = np.concatenate([[float(outside_voxels)], counts])
            index = index + 1
    decisions = rows.astype(np.float64)
    weights = decisions.mean(axis=1)  # ITK's start: the fraction of readers marking the voxel
    g = float(counts @ weights / counts.sum()) * confidence_weight
    if g > 1.0:
        raise ValueError(f"confidence_weight: {confidence_weight:g} makes the prior {g:g}, above 1")
    p = q = np.full(len(masks), np.nan)
    converged = False
    iteration = 0
    for iteration in range(1, max_iterations + 1):  # noqa: B007 - the count is reported
        last_p, last_q = p, q
        p, q = _rates(decisions, counts, weights)
        weights = _posterior(decisions, p, q, g)
        # ITK's test: a NaN change (a rate with nothing to measure) does not count as a change.
        if iteration > 1 and not ((p - last_p) ** 2 > _STOP).any() and not ((q - last_q) ** 2 > _STOP).any():
            converged = True
            break
    probability = weights.astype(np.float32)[index]
    return StapleResult(probability, tuple(map(float, p)), tuple(map(float, q)), g, iteration, converged)


def _rates(decisions: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M-step: each reader's sensitivity and specificity against the current posteriors (NaN if 0/0)."""
    on, off = counts * weights, counts * (1.0 - weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (on @ decisions) / on.sum(), (off @ (1.0 - decisions)) / off.sum()


def _posterior(decisions: np.ndarray, p: np.ndarray, q: np.ndarray, g: float) -> np.ndarray:
    """E-step: the posterior of the structure for each decision pattern; a prior of 0 or 1 decides alone."""
    if g <= 0.0 or g >= 1.0:
        return np.full(len(decisions), float(g >= 1.0))
    a = np.prod(np.where(decisions > 0, p, 1.0 - p), axis=1) * g
    b = np.prod(np.where(decisions > 0, 1.0 - q, q), axis=1) * (1.0 - g)
    with np.errstate(invalid="ignore", divide="ignore"):
        return a / (a + b)


def multilabel_staple(labelmaps: Sequence[np.ndarray], undecided_label: int | None = None) -> np.ndarray:
    """Multi-label STAPLE (Rohlfing et al. 2004) of non-overlapping labelmaps, through SimpleITK's
    ``MultiLabelSTAPLEImageFilter``. Voxels the filter cannot decide get ``undecided_label`` (by default
    one more than the largest label)."""
    import SimpleITK as sitk

    labelmaps = [np.asarray(labels) for labels in labelmaps]
    for index, labels in enumerate(labelmaps[1:], start=1):
        if labels.shape != labelmaps[0].shape:
            raise ValueError(f"labelmaps[{index}]: shape {labels.shape} differs from {labelmaps[0].shape}")
    images = [sitk.GetImageFromArray(labels.astype(np.uint16)) for labels in labelmaps]
    fusion = sitk.MultiLabelSTAPLEImageFilter()
    if undecided_label is None:
        undecided_label = int(max(int(labels.max()) for labels in labelmaps)) + 1
    fusion.SetLabelForUndecidedPixels(undecided_label)
    return sitk.GetArrayFromImage(fusion.Execute(images)).astype(labelmaps[0].dtype, copy=False)
