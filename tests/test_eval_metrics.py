"""The WGO-Bench metrics on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from episcribe.eval.metrics import (
    Segment,
    greedy_matches,
    iou,
    mean_per_episode_f1,
    pooled,
    score_corpus,
    score_episode,
)


def segs(*spans):
    return [Segment(a, b, label) for a, b, label in spans]


def exact(pred: str, gold: str) -> bool:
    return pred == gold


def test_iou_of_exactly_three_quarters_counts_even_on_float32_timestamps():
    gold = segs((0.1, 0.5, "a"))
    f32 = float(np.float32(0.2)), float(np.float32(0.5)), float(np.float32(0.1))
    # In floating point this pair is 0.74999999..., which would miss the line.
    assert (f32[1] - f32[0]) / (f32[1] - f32[2]) < 0.75
    pred = [Segment(f32[0], f32[1], "a")]
    assert iou(pred[0], gold[0]) == 0.75
    assert greedy_matches(pred, gold)  # counts
    # Just under the line (3 ms short of the 0.3 s overlap): no match.
    assert not greedy_matches([Segment(0.203, 0.5)], gold)


def test_outer_edges_are_snapped_to_gold():
    gold = segs((1.0, 3.0, "reach"), (3.0, 5.0, "grasp"))
    # Starts 1 s early and ends 2 s late: unsnapped the IoUs would be 2/3 and 2/4.
    pred = segs((0.0, 3.0, "reach"), (3.0, 7.0, "grasp"))
    score = score_episode(0, pred, gold, exact)
    assert (score.predicted, score.gold, score.matched, score.accepted_matches) == (2, 2, 2, 2)
    # An inner boundary is scored: moved by 0.8 s it costs both matches (IoUs 2/2.8, 1.2/2).
    moved = segs((0.0, 3.8, "reach"), (3.8, 7.0, "grasp"))
    assert score_episode(0, moved, gold).matched == 0


def test_greedy_order_decides_a_tie_and_highest_iou_goes_first():
    gold = segs((0, 4, "a"), (4, 8, "grasp"), (8, 12, "c"))
    # Two predictions tie for the middle gold at IoU 3/4: the earlier one takes it.
    pred = segs((0, 4, "a"), (4, 7, "grasp"), (5, 8, "wipe"), (8, 12, "c"))
    score = score_episode(0, pred, gold, exact)
    assert (score.predicted, score.matched, score.accepted_matches) == (4, 3, 3)
    assert [(p, g) for p, g, _ in score.pairs] == [(0, 0), (1, 1), (3, 2)]
    swapped = segs((0, 4, "a"), (4, 7, "wipe"), (5, 8, "grasp"), (8, 12, "c"))
    assert score_episode(0, swapped, gold, exact).accepted_matches == 2
    # Not a tie: IoU 0.9 beats 0.8, whatever the order.
    gold = segs((0, 10, "a"), (10, 20, "b"))
    pred = segs((0, 10, "x"), (10, 18, "wrong"), (11, 20, "b"))
    score = score_episode(0, pred, gold, exact)
    assert [(p, g) for p, g, _ in score.pairs] == [(0, 0), (2, 1)]
    assert score.accepted_matches == 1


def test_empty_prediction_and_episode_missing_from_prediction():
    gold = {0: segs((0, 2, "a"), (2, 4, "b")), 1: segs((0, 3, "c"))}
    scores = score_corpus({0: [], 7: segs((0, 1, "x"))}, gold, exact)
    assert [(s.episode, s.predicted, s.gold, s.matched) for s in scores] == [
        (0, 0, 2, 0),
        (1, 0, 1, 0),
    ]
    total = pooled(scores)
    assert (total["predicted"], total["gold"], total["matched"]) == (0, 3, 0)
    assert total["precision"] == total["recall"] == total["f1"] == total["end_to_end_f1"] == 0


def test_pooled_and_per_episode_average_differ():
    gold = {
        0: segs((0, 2, "a")),
        1: segs((0, 2, "a"), (2, 4, "b"), (4, 6, "c")),
    }
    pred = {
        0: segs((0, 2, "a")),  # perfect: F1 1
        1: segs((0, 1, "a"), (1, 5, "b"), (5, 6, "c")),  # IoUs 1/2, 2/4, 1/2: F1 0
    }
    scores = score_corpus(pred, gold)
    assert mean_per_episode_f1(scores) == pytest.approx(0.5)
    total = pooled(scores)
    assert (total["matched"], total["predicted"], total["gold"]) == (1, 4, 4)
    assert total["f1"] == pytest.approx(0.25)  # the benchmark's number
    assert total["end_to_end_f1"] is None  # no judge, no end-to-end score


def test_labeling_accuracy_and_end_to_end_never_above_segmentation():
    gold = {0: segs((0, 2, "grasp the cup"), (2, 4, "lift the cup"), (4, 6, "place it"))}
    pred = {0: segs((0, 2, "grasp the cup"), (2, 4, "lift the mug"), (4, 5, "x"), (5, 6, "y"))}
    labels = {0: ["grasp the cup", "lift the cup", ""]}
    total = pooled(score_corpus(pred, gold, exact, labels))
    # matches: [0,2] and [2,4]; [4,5] and [5,6] have IoU 1/2 with [4,6]
    assert (total["matched"], total["predicted"], total["gold"]) == (2, 4, 3)
    assert total["f1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert total["end_to_end_f1"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert total["labeling_accuracy"] == pytest.approx(2 / 3)
