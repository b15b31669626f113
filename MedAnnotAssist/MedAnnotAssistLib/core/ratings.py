"""Case-level inter-rater agreement for classification questions asked per case.

Each reader answers the same question for every case with a category label; these functions
measure how far the readers agree beyond chance.

Conventions:

* A label is any hashable value that compares with the other labels (str, int, float, bool).
  ``None`` and NaN mean "no answer". Equal values are the same label (1 == 1.0 == True).
* ``categories`` lists the possible labels. Its order is the scale for the ordered statistics
  (weighted kappa, ordinal alpha); categories nobody used change nothing but the weighted-kappa
  distances, which count positions in this list. Without ``categories`` the labels seen are
  used, sorted, and the ordered statistics then need numeric labels.
* Every statistic is ``1 - observed / expected disagreement``. When the expected disagreement
  is 0, i.e. every answer that counts is one and the same category, the ratio is 0/0; agreement
  is then perfect and these functions return 1.0 (sklearn and the ``krippendorff`` package
  return NaN there).
* Problems raise ``ValueError`` with a message naming them: fewer than 2 raters, nothing to
  pair, a label outside ``categories``, labels that cannot be compared, an unknown option.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from numbers import Number
from typing import Any

import numpy as np

LEVELS = ("nominal", "ordinal", "interval")
WEIGHTS = (None, "linear", "quadratic")


def _encode(data: Any, categories: Iterable | None, ordered: bool, what: str) -> tuple[np.ndarray, list]:
    """2-D labels -> (int codes indexing the category list, -1 where missing; the category list)."""
    values = np.asarray(data, dtype=object)
    if values.ndim != 2:
        raise ValueError(f"{what}: expected a table of labels with the same number of entries in every row")
    missing = np.equal(values, None) | np.not_equal(values, values)  # None, or NaN (NaN != NaN)
    try:
        seen, inverse = np.unique(values[~missing], return_inverse=True)
    except TypeError as error:
        raise ValueError(f"{what}: labels of different types cannot be compared ({error})") from None
    if categories is None:
        if ordered and not all(isinstance(v, Number) for v in seen):
            raise ValueError(f"{what}: ordered statistics on non-numeric labels need `categories` to give the order")
        labels, lookup = list(seen), np.arange(len(seen))
    else:
        labels, index = list(categories), {}
        for position, label in enumerate(labels):
            if label is None or label != label:
                raise ValueError(f"{what}: categories must not contain None or NaN")
            if label in index:
                raise ValueError(f"{what}: category {label!r} is listed twice")
            index[label] = position
        for label in seen:
            if label not in index:
                raise ValueError(f"{what}: label {label!r} is not one of the categories {labels!r}")
        lookup = np.array([index[v] for v in seen], dtype=np.intp)
    codes = np.full(values.shape, -1, dtype=np.intp)
    codes[~missing] = lookup[inverse]
    return codes, labels


def cohens_kappa(a: Sequence, b: Sequence, categories: Iterable | None = None, weights: str | None = None) -> float:
    """Cohen's kappa between two raters who labelled the same N items.

    With O the q x q table of the items' label pairs (rater a's label i, rater b's label j) and
    E = r c^T / n the table expected from the marginals r, c of O (n items),

        kappa = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij,

    where w_ij = [i != j] (nominal, default), |i - j| ("linear") or (i - j)^2 ("quadratic"),
    i and j being positions in the category order. Unweighted this is (p_o - p_e) / (1 - p_e).
    Items that either rater left unanswered are left out. Returns 1.0 when both raters gave one
    and the same category for every item (E is all on the diagonal, so no expected disagreement).
    """
    if weights not in WEIGHTS:
        raise ValueError(f"cohens_kappa: weights must be one of {WEIGHTS}, got {weights!r}")
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"cohens_kappa: the two raters labelled different numbers of items ({len(a)}, {len(b)})")
    codes, labels = _encode([a, b], categories, weights is not None, "cohens_kappa")
    both = (codes >= 0).all(axis=0)
    if not both.any():
        raise ValueError("cohens_kappa: no item was labelled by both raters")
    q = len(labels)
    observed = np.bincount(codes[0, both] * q + codes[1, both], minlength=q * q).reshape(q, q).astype(float)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    i, j = np.indices((q, q))
    w = {None: i != j, "linear": np.abs(i - j), "quadratic": (i - j) ** 2}[weights].astype(float)
    disagreement = (w * expected).sum()  # a sum of non-negative terms: exactly 0 only when all are
    if disagreement == 0:
        return 1.0
    return float(1.0 - (w * observed).sum() / disagreement)


def fleiss_kappa_from_counts(counts: Any) -> float:
    """Fleiss' kappa from an N x k table: ``counts[i, j]`` raters put item i in category j.

    Every item needs the same number of ratings n = sum_j counts[i, j] >= 2. With
    p_j = sum_i counts[i, j] / (N n), P_i = (sum_j counts[i, j]^2 - n) / (n (n - 1)),
    P = mean_i P_i and P_e = sum_j p_j^2 (Fleiss 1971),

        kappa = (P - P_e) / (1 - P_e).

    Returns 1.0 when P_e = 1, i.e. every rating is the same category.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"fleiss_kappa: counts must be an N items x k categories table, got shape {table.shape}")
    if (table < 0).any() or (table != np.round(table)).any():
        raise ValueError("fleiss_kappa: counts must be non-negative whole numbers")
    per_item = table.sum(axis=1)
    n = per_item[0]
    if (per_item != n).any():
        item = int(np.flatnonzero(per_item != n)[0])
        raise ValueError(
            f"fleiss_kappa: every item needs the same number of ratings; item 0 has {n:g}, "
            f"item {item} has {per_item[item]:g}"
        )
    if n < 2:
        raise ValueError(f"fleiss_kappa: needs at least 2 raters per item, got {n:g}")
    p = table.sum(axis=0) / table.sum()
    if np.count_nonzero(p) <= 1:
        return 1.0
    agreement = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    p_e = (p**2).sum()
    return float((agreement.mean() - p_e) / (1.0 - p_e))


def fleiss_kappa(ratings: Sequence[Sequence], categories: Iterable | None = None) -> float:
    """Fleiss' kappa from labels: ``ratings[i]`` holds the n labels item i got (N x n, n >= 2).

    The raters need not be the same people for every item, but every item needs n labels and
    none may be missing (use ``krippendorff_alpha`` for missing data). See
    ``fleiss_kappa_from_counts`` for the formula.
    """
    codes, labels = _encode(ratings, categories, False, "fleiss_kappa")
    n_items, n_raters = codes.shape
    if n_items == 0:
        raise ValueError("fleiss_kappa: no items")
    if n_raters < 2:
        raise ValueError(f"fleiss_kappa: needs at least 2 raters per item, got {n_raters}")
    if (codes < 0).any():
        item = int(np.flatnonzero((codes < 0).any(axis=1))[0])
        raise ValueError(f"fleiss_kappa: item {item} has a missing rating; use krippendorff_alpha for missing data")
    k = len(labels)
    flat = (np.arange(n_items)[:, None] * k + codes).ravel()
    return fleiss_kappa_from_counts(np.bincount(flat, minlength=n_items * k).reshape(n_items, k))


def krippendorff_alpha(reliability_data: Any, level: str = "ordinal", categories: Iterable | None = None) -> float:
    """Krippendorff's alpha for m raters (rows) x N units (columns); None or NaN where missing.

    As in Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": a unit is pairable
    when it has at least 2 values; the others are ignored. With n_uc the number of values c in
    unit u and m_u = sum_c n_uc, the coincidence matrix over the pairable units is

        o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1),

    with marginals n_c = sum_k o_ck and n = sum_c n_c (the number of pairable values), and

        alpha = 1 - D_o / D_e = 1 - (n - 1) sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck,

    with the difference function d2 of the level of measurement:

        nominal:  d2_ck = [c != k]
        ordinal:  d2_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2, c <= k ranks in category order
        interval: d2_ck = (c - k)^2 on the numeric values of the labels

    Returns 1.0 when D_e = 0, i.e. all pairable values are one and the same category.
    """
    if level not in LEVELS:
        raise ValueError(f"krippendorff_alpha: level must be one of {LEVELS}, got {level!r}")
    codes, labels = _encode(reliability_data, categories, level != "nominal", "krippendorff_alpha")
    n_raters, n_units = codes.shape
    if n_raters < 2:
        raise ValueError(f"krippendorff_alpha: needs at least 2 raters (rows), got {n_raters}")
    if level == "interval" and not all(isinstance(v, Number) for v in labels):
        raise ValueError("krippendorff_alpha: interval level needs numeric labels (and numeric categories)")
    q = len(labels)
    present = codes >= 0
    cells = (np.arange(n_units)[None, :] * q + codes)[present]
    unit_counts = np.bincount(cells, minlength=n_units * q).reshape(n_units, q)
    pairable = unit_counts.sum(axis=1) >= 2
    if not pairable.any():
        raise ValueError("krippendorff_alpha: no unit has values from 2 or more raters, so nothing can be paired")
    counts = unit_counts[pairable].astype(float)
    scale = 1.0 / (counts.sum(axis=1) - 1.0)
    coincidence = (counts * scale[:, None]).T @ counts - np.diag(scale @ counts)
    n_c = counts.sum(axis=0)  # equals coincidence.sum(axis=1), but exact
    if np.count_nonzero(n_c) <= 1:
        return 1.0
    ranks = np.arange(q)
    if level == "nominal":
        d2 = (ranks[:, None] != ranks[None, :]).astype(float)
    elif level == "interval":
        numeric = np.asarray(labels, dtype=float)
        d2 = np.subtract.outer(numeric, numeric) ** 2
    else:
        low, high = np.minimum.outer(ranks, ranks), np.maximum.outer(ranks, ranks)
        between = np.cumsum(n_c)[high] - np.cumsum(n_c)[low] + n_c[low]  # sum of n_g for g = low..high
        d2 = (between - np.add.outer(n_c, n_c) / 2.0) ** 2
    return float(1.0 - (n_c.sum() - 1.0) * (coincidence * d2).sum() / (np.outer(n_c, n_c) * d2).sum())


def question_agreement(
    answers: Mapping[str, Sequence], categories: Iterable | None = None, ordinal: bool = False
) -> dict[str, Any]:
    """Agreement of the readers on one question asked per case.

    ``answers`` maps reader name -> that reader's answers, one per case in the same case order
    for every reader (None or NaN where a reader gave no answer). Returns

        {"n_readers", "n_items", "cohens_kappa", "fleiss_kappa", "krippendorff_alpha"}

    ``cohens_kappa`` (unweighted) is given for exactly 2 readers, else None. Both kappas use the
    cases every reader answered; alpha uses every answer, ordinal when ``ordinal`` is true (pass
    the ordered ``categories``, or use numeric answers), nominal otherwise. A statistic with no
    case to compute it from (none answered by all readers, or by any 2) is None.
    """
    names = list(answers)
    if len(names) < 2:
        raise ValueError(f"question_agreement: needs answers from at least 2 readers, got {len(names)}")
    lengths = {name: len(answers[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"question_agreement: readers answered different numbers of cases: {lengths}")
    categories = None if categories is None else list(categories)
    table = np.empty((len(names), lengths[names[0]]), dtype=object)
    table[:] = [list(answers[name]) for name in names]
    codes, _ = _encode(table, categories, ordinal, "question_agreement")  # checks every label up front
    answered = (codes >= 0).sum(axis=0)
    complete = answered == len(names)
    result = {"n_readers": len(names), "n_items": table.shape[1], "cohens_kappa": None, "fleiss_kappa": None}
    if complete.any():
        if len(names) == 2:
            result["cohens_kappa"] = cohens_kappa(table[0], table[1], categories)
        result["fleiss_kappa"] = fleiss_kappa(table[:, complete].T, categories)
    level = "ordinal" if ordinal else "nominal"
    alpha = krippendorff_alpha(table, level, categories) if (answered >= 2).any() else None
    result["krippendorff_alpha"] = alpha
    return result
