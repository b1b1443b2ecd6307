"""The agile benchmark's pure logic: the ground-truth rule for a window, the simulated annotator, and the plan of
planted events (benchmarks/bench_agile.py). The benchmark itself is run by `make benchmarks`, not here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_agile as b


def _event(start, end, kind="a", recording=0):
    return b.Event(recording, start, end, kind, seed=0, gain=1.0)


def test_a_window_is_positive_when_it_holds_half_of_an_event_or_more():
    starts = np.array([0.0, 5.0, 10.0, 15.0, 0.0])
    ends = starts + 10.0
    recordings = np.array([0, 0, 0, 0, 1])
    # event 8..12 s in recording 0: window 0-10 holds 2 s (50%), 5-15 all of it, 10-20 2 s (50%), 15-25 none;
    # the window of recording 1 at the same time is not the same place
    truth = b.window_truth(starts, ends, recordings, [_event(8.0, 12.0)], "a")
    assert truth.tolist() == [True, True, True, False, False]
    # 9..13 s: window 0-10 holds 1 s of 4 (25%), 10-20 3 s (75%)
    truth = b.window_truth(starts, ends, recordings, [_event(9.0, 13.0)], "a")
    assert truth.tolist() == [False, True, True, False, False]
    # a stricter rule (the whole event) keeps only the window containing it
    truth = b.window_truth(starts, ends, recordings, [_event(9.0, 13.0)], "a", min_event_overlap=1.0)
    assert truth.tolist() == [False, True, False, False, False]


def test_a_bout_longer_than_the_window_makes_positive_every_window_it_half_fills():
    starts = np.array([0.0, 10.0, 19.0, 21.0, 30.0])
    ends = starts + 10.0
    # 0..25 s: windows 0-10 and 10-20 are full, 19-29 holds 6 s (over half the window), 21-31 only 4 s
    truth = b.window_truth(starts, ends, np.zeros(5, int), [_event(0.0, 25.0)], "a")
    assert truth.tolist() == [True, True, True, False, False]


def test_events_of_another_kind_are_not_the_target():
    starts = np.array([0.0, 5.0])
    truth = b.window_truth(
        starts,
        starts + 10,
        np.zeros(2, int),
        [_event(1.0, 4.0, kind="b"), _event(6.0, 9.0, kind="distractor:Azure Whistler")],
        "a",
    )
    assert not truth.any()


def test_the_annotator_answers_from_the_truth_and_counts_questions():
    annotator = b.Annotator(np.array([False, True, False]))
    assert [annotator(r) for r in (1, 0, np.int64(2))] == ["positive", "negative", "negative"]
    assert annotator.asked == 3


def test_the_plan_has_200_events_per_target_apart_and_inside_the_recordings():
    events = b.plan_events(20, 3600.0, seed=0)
    assert events == b.plan_events(20, 3600.0, seed=0)  # deterministic: a rerun reuses the same recordings
    for kind in ("a", "b"):
        assert sum(e.kind == kind for e in events) >= 200
    assert all(0 <= e.start < e.end <= 3600.0 for e in events)
    for rec in range(20):
        planted = sorted((e.start, e.end) for e in events if e.recording == rec and e.kind in ("a", "b"))
        gaps = [s2 - e1 for (_, e1), (s2, _) in zip(planted, planted[1:])]
        assert min(gaps) >= b.MIN_GAP_S  # no window holds events of both targets
    # distractors are the demo model's own species, never target (a)
    names = {e.kind.split(":", 1)[1] for e in events if e.kind.startswith("distractor:")}
    assert names and names <= set(b.distractor_patterns()) and b.targets()["a"].name not in names
