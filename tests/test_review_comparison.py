"""The comparison's verdict helpers (experiments/review_comparison/comparison.py):
"within SAM's error" against the standard error written out by hand, the
cheapest such method, and the plot's label spreading against hand-placed
heights."""

import collections

import pytest

from experiments.review_comparison import comparison

Cell = collections.namedtuple("Cell", "mean std values")


def cell(values):
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 \
        if len(values) > 1 else None
    return Cell(mean, std, tuple(values))


def test_within_is_one_standard_error_of_the_difference():
    sam = cell([16.0, 16.5, 17.0])  # mean 16.5, std 0.5
    # se = sqrt(0.5^2 / 3 + 0.5^2 / 3) = 0.40825
    assert comparison.within(sam, cell([16.4, 16.9, 17.4]))  # mean 16.9 < 16.908
    assert not comparison.within(sam, cell([16.42, 16.92, 17.42]))  # 16.92 > 16.908
    assert comparison.within(sam, cell([15.0, 15.5, 16.0]))  # lower is always within


def test_cheapest_within_sam_needs_two_seeds_and_breaks_cost_ties_by_error():
    def row(errors, kilo_evaluations):
        return {"error": cell(errors), "kilo_gradient_evaluations": cell([kilo_evaluations])}
    done = {"sam": row([16.0, 16.5, 17.0], 1.5),
            "sgd": row([16.6, 16.7, 16.8], 0.75),        # within, cheapest
            "swa": row([16.5, 16.6, 16.7], 0.75),        # within, same cost, lower
            "one_seed": row([10.0], 0.5),                # no spread: not a candidate
            "worse": row([19.0, 19.5, 20.0], 0.1)}       # cheap but not within
    assert comparison.cheapest_within_sam(done) == "swa"
    del done["swa"]
    assert comparison.cheapest_within_sam(done) == "sgd"
    del done["sgd"]
    assert comparison.cheapest_within_sam(done) == "sam"
    del done["sam"]
    assert comparison.cheapest_within_sam(done) is None


def test_spread_labels_by_column():
    xs = [1.0, 1.02, 1.01, 5.0, 1.04]
    ys = [3.0, 3.1, 3.05, 3.0, 9.0]
    # Column x ~ 1 (chained within 0.5): 3.0, 3.05, 3.1 pushed 0.2 apart; 9.0
    # is far enough; x = 5 alone keeps its height.
    heights = comparison.spread_labels(xs, ys, x_tolerance=0.5, gap=0.2)
    assert heights == pytest.approx([3.0, 3.4, 3.2, 3.0, 9.0])


def test_paired_difference_by_hand():
    from experiments.review_comparison import headline
    # differences -5.1, -6.1, -1.1: mean -4.1, std sqrt(((-1)^2 + (-2)^2 + 3^2) / 2)
    # = sqrt(7), standard error sqrt(7 / 3).
    mean, se, below = headline.paired_difference([45.0, 49.2, 61.7], [50.1, 55.3, 62.8])
    assert mean == pytest.approx(-4.1)
    assert se == pytest.approx((7 / 3) ** 0.5)
    assert below == 3
    assert headline.paired_difference([1.0, 2.0], [1.0]) is None
    assert headline.paired_difference([1.0], [2.0]) is None


def test_headline_without_picks_is_one_line_and_writes_nothing(tmp_path, monkeypatch,
                                                                capsys):
    from experiments.review_comparison import headline
    monkeypatch.setattr(comparison, "PICKS_PATH", str(tmp_path / "absent.json"))
    monkeypatch.setattr(comparison.read_picks, "__defaults__",
                        (str(tmp_path / "absent.json"),))
    out = tmp_path / "headline.md"
    assert headline.main([f"--root={tmp_path}", f"--out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "absent.json does not exist" in err
    assert "\n" not in err and not out.exists()
