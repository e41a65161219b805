"""Benchmark metrics and dataset adapters on small hand-checked inputs."""

import math

import pytest

from benchmarks import datasets
from benchmarks.metrics import aurc, auroc, risk_coverage, spearman


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.9, 0.8, 0.2, 0.1], [True, True, False, False], 1.0),
        ([0.1, 0.2, 0.8, 0.9], [True, True, False, False], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),
        ([0.9, 0.3, 0.6, 0.1], [True, True, False, False], 0.75),
    ],
)
def test_auroc(scores, labels, expected):
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_single_class_is_nan():
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_risk_coverage_does_not_depend_on_the_order_of_tied_items():
    # Two items tied at 0.5, one right and one wrong: whichever comes first, the expected risk at
    # coverage 1/2 (accepting one of the pair) is 0.5.
    for labels in ([True, False], [False, True]):
        cov, risk = risk_coverage([0.5, 0.5], labels)
        assert cov == [0.5, 1.0] and risk == pytest.approx([0.5, 0.5])
    assert aurc([0.9, 0.5, 0.5], [True, True, False]) == aurc([0.9, 0.5, 0.5], [True, False, True])


def test_risk_coverage_and_area():
    cov, risk = risk_coverage([0.9, 0.8, 0.1], [True, False, True])
    assert cov == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert risk == pytest.approx([0.0, 0.5, 1 / 3])
    assert aurc([0.9, 0.8, 0.1], [True, False, True]) == pytest.approx((0 + 0.5 + 1 / 3) / 3)


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))


@pytest.fixture(scope="module")
def data_dir():
    if not datasets.DEFAULT_DATA_DIR.exists():
        pytest.fail(f"evaluation data not found at {datasets.DEFAULT_DATA_DIR} (../shared/data)")
    return datasets.DEFAULT_DATA_DIR


def test_gsm8k_socratic_adapter_reads_gold_ars(data_dir):
    (p,) = datasets.load("gsm8k", data_dir, limit=1)
    assert p.answer == "1210"
    assert len(p.sub_questions) == len(p.sub_answers) == 4
    assert p.sub_questions[0] == "How many legs do the spiders have?"
    assert p.sub_answers == ("640", "540", "30", "1210")


@pytest.mark.parametrize("name", ["svamp", "multiarith", "gsm8k-train"])
def test_other_adapters(data_dir, name):
    problems = datasets.load(name, data_dir, limit=5)
    assert len(problems) == 5
    assert all(p.question and p.answer for p in problems)
    assert all(float(p.answer) == float(p.answer) for p in problems)
