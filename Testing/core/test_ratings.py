"""Inter-rater agreement, checked against published worked examples and independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from MedAnnotAssistLib.core.ratings import (
    cohens_kappa,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    krippendorff_alpha,
    question_agreement,
)

krippendorff = pytest.importorskip("krippendorff")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")

NAN = math.nan
SEVERITY = ["none", "mild", "moderate", "severe", "critical"]

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 observers,
# 12 units, values 1-5, missing data. Published: nominal 0.743, ordinal 0.815, interval 0.849.
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def _random_ratings(seed: int, n_raters: int, n_units: int, n_values: int, missing: float) -> np.ndarray:
    """raters x units of values 1..n_values, NaN where missing, with some rater agreement built in."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(1, n_values + 1, n_units)
    noise = rng.integers(1, n_values + 1, (n_raters, n_units))
    data = np.where(rng.random((n_raters, n_units)) < 0.6, truth, noise).astype(float)
    data[rng.random(data.shape) < missing] = np.nan
    return data


# --- published worked examples ---------------------------------------------------------------


def test_cohen_textbook_example():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
    assert cohens_kappa(b, a) == pytest.approx(0.4, abs=1e-12)


def test_fleiss_wikipedia_example():
    kappa = fleiss_kappa_from_counts(FLEISS_WIKIPEDIA)
    assert kappa == pytest.approx(0.210, abs=5e-4)
    # The same table written as labels: item i lists its 14 ratings.
    ratings = [sum(([c] * n for c, n in enumerate(row)), []) for row in FLEISS_WIKIPEDIA]
    assert fleiss_kappa(ratings) == pytest.approx(kappa, abs=1e-12)


@pytest.mark.parametrize(("level", "published"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_2011_example_c(level, published):
    assert krippendorff_alpha(KRIPPENDORFF_C, level) == pytest.approx(published, abs=5e-4)


def test_krippendorff_2011_examples_a_and_b():
    # A: binary data, two observers, no missing data: alpha = 0.095
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha([a, b], "nominal") == pytest.approx(0.095, abs=5e-4)
    # B: nominal data, two observers, no missing data: alpha = 0.692
    a = ["a", "a", "b", "b", "d", "c", "c", "c", "e", "d", "d", "a"]
    b = ["b", "a", "b", "b", "b", "c", "c", "c", "e", "d", "d", "d"]
    assert krippendorff_alpha([a, b], "nominal") == pytest.approx(0.692, abs=5e-4)


def test_krippendorff_example_c_with_string_labels_and_none():
    words = [[None if math.isnan(v) else SEVERITY[int(v) - 1] for v in row] for row in KRIPPENDORFF_C]
    for level in ("nominal", "ordinal"):
        assert krippendorff_alpha(words, level, SEVERITY) == pytest.approx(krippendorff_alpha(KRIPPENDORFF_C, level))


# --- cross-checks against independent implementations ---------------------------------------


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("weights", [None, "linear", "quadratic"])
def test_cohen_matches_sklearn(seed, weights):
    data = _random_ratings(seed, 2, 40, 5, missing=0.0).astype(int)
    expected = sklearn_metrics.cohen_kappa_score(data[0], data[1], weights=weights)
    assert cohens_kappa(data[0], data[1], weights=weights) == pytest.approx(expected, abs=1e-9)
    # Unused categories in between change the weighted distances, as in sklearn's `labels`.
    labels = [0, 1, 2, 3, 4, 5, 6]
    expected = sklearn_metrics.cohen_kappa_score(data[0], data[1], labels=labels, weights=weights)
    assert cohens_kappa(data[0], data[1], labels, weights) == pytest.approx(expected, abs=1e-9)


def test_cohen_leaves_out_items_either_rater_skipped():
    data = _random_ratings(3, 2, 60, 4, missing=0.2)
    both = ~np.isnan(data).any(axis=0)
    expected = sklearn_metrics.cohen_kappa_score(data[0, both], data[1, both], weights="quadratic")
    assert cohens_kappa(data[0], data[1], weights="quadratic") == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_fleiss_matches_statsmodels(seed):
    ratings = _random_ratings(seed, 3 + seed % 4, 30, 4, missing=0.0).T.astype(int)  # items x raters
    counts, _ = inter_rater.aggregate_raters(ratings)
    expected = inter_rater.fleiss_kappa(counts, method="fleiss")
    assert fleiss_kappa(ratings) == pytest.approx(expected, abs=1e-9)
    assert fleiss_kappa_from_counts(counts) == pytest.approx(expected, abs=1e-9)
    assert fleiss_kappa(ratings, categories=[0, 1, 2, 3, 4, 5]) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_krippendorff_matches_the_krippendorff_package(seed, level):
    data = _random_ratings(seed, 2 + seed % 5, 10 + 7 * seed, 3 + seed % 4, missing=0.25)
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
    assert krippendorff_alpha(data, level) == pytest.approx(expected, abs=1e-9)
    if level != "interval":  # the same data as words with None for missing, order from `categories`
        scale = SEVERITY + ["fatal", "other"]
        words = np.array(scale, dtype=object)[np.nan_to_num(data, nan=1).astype(int) - 1]
        words[np.isnan(data)] = None
        assert krippendorff_alpha(words, level, scale) == pytest.approx(expected, abs=1e-9)


def test_interval_alpha_uses_the_numeric_values():
    data = [[1.0, 2.5, 4.0, NAN, 10.0], [1.5, 2.5, 3.0, 7.0, 9.0], [NAN, 2.0, 4.5, 6.0, NAN]]
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
    assert krippendorff_alpha(data, "interval") == pytest.approx(expected, abs=1e-9)


def test_unused_categories_do_not_change_alpha():
    for level in ("nominal", "ordinal", "interval"):
        plain = krippendorff_alpha(KRIPPENDORFF_C, level)
        assert krippendorff_alpha(KRIPPENDORFF_C, level, [0, 1, 2, 3, 4, 5, 6]) == pytest.approx(plain, abs=1e-12)


# --- edge cases -----------------------------------------------------------------------------


def test_one_shared_category_is_perfect_agreement():
    assert cohens_kappa(["yes"] * 5, ["yes"] * 5) == 1.0
    assert cohens_kappa(["yes"] * 5, ["yes"] * 5, ["yes", "no"], "quadratic") == 1.0
    assert fleiss_kappa([["a", "a", "a"]] * 4) == 1.0
    assert fleiss_kappa_from_counts([[0, 3], [0, 3]]) == 1.0
    assert krippendorff_alpha([[2, 2, NAN], [2, NAN, 7], [2, 2, NAN]], "ordinal") == 1.0  # unit 3 is not pairable
    assert krippendorff_alpha([["x", None], ["x", "x"]], "nominal") == 1.0


def test_perfect_agreement_and_systematic_disagreement():
    a = ["no", "yes", "no", "yes"]
    assert cohens_kappa(a, a) == 1.0
    assert fleiss_kappa([[v] * 3 for v in a]) == 1.0
    assert krippendorff_alpha([a, a, a], "nominal") == 1.0
    assert cohens_kappa(a, ["yes", "no", "yes", "no"]) == pytest.approx(-1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: krippendorff_alpha([[1, 2, 3]], "nominal"), "at least 2 raters"),
        (lambda: krippendorff_alpha([[1, None], [None, 2]], "nominal"), "no unit has values from 2 or more raters"),
        (lambda: krippendorff_alpha([[1, 2], [2, 1]], "ratio"), "level must be one of"),
        (lambda: krippendorff_alpha([["a", "b"], ["b", "a"]], "ordinal"), "need `categories` to give the order"),
        (lambda: krippendorff_alpha([["a", "b"], ["b", "a"]], "interval", ["a", "b"]), "numeric labels"),
        (lambda: krippendorff_alpha([[1, 2], [3]], "nominal"), "same number of entries in every row"),
        (lambda: krippendorff_alpha([["a", 1], ["b", 2]], "nominal"), "labels of different types"),
        (lambda: fleiss_kappa([["a"], ["b"]]), "at least 2 raters"),
        (lambda: fleiss_kappa([["a", "b"], ["a", None]]), "item 1 has a missing rating"),
        (lambda: fleiss_kappa([]), "expected a table"),
        (lambda: fleiss_kappa_from_counts([[1, 2], [2, 2]]), "item 0 has 3, item 1 has 4"),
        (lambda: fleiss_kappa_from_counts([[1, 0], [0, 1]]), "at least 2 raters"),
        (lambda: fleiss_kappa_from_counts([[1.5, 0.5]]), "non-negative whole numbers"),
        (lambda: cohens_kappa(["a", "b"], ["a"]), "different numbers of items (2, 1)"),
        (lambda: cohens_kappa(["a", None], [None, "b"]), "no item was labelled by both raters"),
        (lambda: cohens_kappa([1, 2], [2, 1], weights="cubic"), "weights must be one of"),
        (lambda: cohens_kappa(["no", "maybe"], ["yes", "no"], ["yes", "no"]), "label 'maybe' is not one of"),
        (lambda: fleiss_kappa([["a", "b"]], ["a", "b", "a"]), "category 'a' is listed twice"),
        (lambda: fleiss_kappa([["a", "b"]], ["a", None]), "must not contain None or NaN"),
    ],
)
def test_problems_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


# --- question_agreement ---------------------------------------------------------------------


def test_question_agreement_two_readers():
    answers = {"alice": ["yes"] * 25 + ["no"] * 25, "bob": ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15}
    result = question_agreement(answers)
    assert result["n_readers"] == 2 and result["n_items"] == 50
    assert result["cohens_kappa"] == pytest.approx(0.4)
    assert result["fleiss_kappa"] == pytest.approx(fleiss_kappa(np.array(list(answers.values())).T))
    assert result["krippendorff_alpha"] == pytest.approx(krippendorff_alpha(list(answers.values()), "nominal"))


def test_question_agreement_ordinal_with_missing_answers():
    words = [[None if math.isnan(v) else SEVERITY[int(v) - 1] for v in row] for row in KRIPPENDORFF_C]
    answers = dict(zip("ABCD", words, strict=True))
    result = question_agreement(answers, SEVERITY, ordinal=True)
    assert result["n_readers"] == 4 and result["n_items"] == 12 and result["cohens_kappa"] is None
    assert result["krippendorff_alpha"] == pytest.approx(0.815, abs=5e-4)
    complete = [i for i in range(12) if all(row[i] is not None for row in words)]
    assert result["fleiss_kappa"] == pytest.approx(fleiss_kappa([[row[i] for row in words] for i in complete]))
    assert question_agreement(answers, SEVERITY)["krippendorff_alpha"] == pytest.approx(0.743, abs=5e-4)


def test_question_agreement_with_nothing_to_compare():
    result = question_agreement({"a": ["x", None], "b": [None, "y"]})
    assert result == {
        "n_readers": 2,
        "n_items": 2,
        "cohens_kappa": None,
        "fleiss_kappa": None,
        "krippendorff_alpha": None,
    }


@pytest.mark.parametrize(
    ("answers", "kwargs", "message"),
    [
        ({"a": ["x"]}, {}, "at least 2 readers, got 1"),
        ({"a": ["x", "y"], "b": ["x"]}, {}, "different numbers of cases"),
        ({"a": ["x"], "b": ["z"]}, {"categories": ["x", "y"]}, "label 'z' is not one of"),
        ({"a": ["x"], "b": ["y"]}, {"ordinal": True}, "need `categories` to give the order"),
    ],
)
def test_question_agreement_errors(answers, kwargs, message):
    with pytest.raises(ValueError, match=message):
        question_agreement(answers, **kwargs)
