"""Per-species thresholds for a precision, and their calibration (issue 28 item 5), on reviewed scores that
overlap and on few labels: numbers checked by hand, a graded Platt fit, and the fall-back to
ranks (never a saturated probability) when the labels cannot support a calibration. The command line is tested
on a real index in tests/test_agile_cli.py."""

from __future__ import annotations

import numpy as np
import pytest

from biolingual.agile.thresholds import Threshold, calibrate, precision_threshold, read_thresholds, write_thresholds
from biolingual.errors import UsageError


def test_threshold_for_a_precision_on_overlapping_scores():
    scores = np.array([0.9, 0.8, 0.7, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 1, 0, 1, 1, 0, 0])
    # at 0.8: 2 of 2 positive; at 0.7 (both tied windows count): 3 of 4; at 0.6: 4 of 5; at 0.5: 4 of 6
    assert precision_threshold(scores, y, 0.9) == (0.8, 1.0, 0.5, 1.0)
    assert precision_threshold(scores, y, 0.75) == (0.6, 0.8, 1.0, 1.0)  # the lowest that keeps it: the most recall
    assert precision_threshold(scores, y, 0.55) == (0.4, pytest.approx(4 / 7), 1.0, 1.0)  # every window: 4 of 7
    # the best window a negative: precision 1 is out of reach
    t, p, r, best = precision_threshold(np.array([0.9, 0.8, 0.1]), np.array([0, 1, 0]), 1.0)
    assert t is None and best == 0.5


def test_calibration_falls_back_to_ranks_with_few_or_separated_labels():
    kind, platt, note = calibrate(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0]))
    assert (kind, platt) == ("rank", None) and "2 positive, 2 negative" in note
    separated = np.r_[np.linspace(0.6, 0.9, 5), np.linspace(0.1, 0.4, 5)]
    kind, platt, note = calibrate(separated, np.r_[np.ones(5), np.zeros(5)])
    assert (kind, platt) == ("rank", None) and "separate perfectly" in note  # the slope would be set by smoothing alone


def test_calibration_of_overlapping_scores_is_platt_and_not_saturated():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40), np.zeros(60)]
    scores = np.r_[rng.normal(0.35, 0.05, 40), rng.normal(0.25, 0.05, 60)]  # cosines that overlap
    kind, (a, c), note = calibrate(scores, y)
    assert kind == "platt" and note == ""
    assert a > 0  # head.py's _platt, which tests/test_agile_head.py checks against scikit-learn's
    p = 1 / (1 + np.exp(-(a * scores + c)))
    assert (
        1e-4 < p.min() and p.max() < 1 - 1e-4 and abs(p.mean() - 0.4) < 0.02
    )  # graded, and as many positives as labelled


def test_thresholds_file_keeps_other_targets_and_names_a_bad_row(tmp_path):
    def t(target, value):
        return Threshold(target, "head", value, 0.9, 0.95, 0.5, 20, 8, 12, 0.01, "rank", None, None, "abc", "few")

    path = tmp_path / "thresholds.csv"
    write_thresholds(path, [t("owl", 1.5), t("frog", -0.25)])
    write_thresholds(path, [t("owl", 2.0)])  # replaces owl's row, keeps frog's
    rows = read_thresholds(path)
    assert {k: float(r["threshold"]) for k, r in rows.items()} == {"owl": 2.0, "frog": -0.25}
    path.write_text(path.read_text().replace("-0.25", "low"))
    with pytest.raises(UsageError, match=r"thresholds.csv', line 3: threshold 'low'"):
        read_thresholds(path)
