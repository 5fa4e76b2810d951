"""Two predictions on the same gold: the difference and a paired bootstrap interval.

Episodes are resampled with replacement (the same draw for both predictions, so an
episode that is hard for both counts for both), the pooled score of each is computed on
every draw, and the interval is the 2.5th-97.5th percentile of the differences. A
difference whose interval excludes 0 is more than the episodes' noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from episcribe.eval.metrics import EpisodeScore, prf

DRAWS = 2000
SEED = 0


def _counts(scores: Sequence[EpisodeScore], e2e: bool) -> np.ndarray:
    """Per episode (matched, predicted, gold), matched = judge-accepted ones for e2e."""
    return np.array(
        [[(s.accepted_matches or 0) if e2e else s.matched, s.predicted, s.gold] for s in scores],
        dtype=float,
    )


def _f1(counts: np.ndarray) -> np.ndarray:
    """Pooled F1 over the episodes axis (-2) of ``counts[..., (matched, predicted, gold)]``."""
    total = counts.sum(axis=-2)
    matched, predicted, gold = total[..., 0], total[..., 1], total[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(predicted + gold > 0, 2 * matched / (predicted + gold), 0.0)
    return f1


def paired_bootstrap(
    a: Sequence[EpisodeScore],
    b: Sequence[EpisodeScore],
    *,
    e2e: bool = False,
    draws: int = DRAWS,
    seed: int = SEED,
) -> dict:
    """F1 of a and b, b - a, and the 95 % paired bootstrap interval of b - a."""
    if [s.episode for s in a] != [s.episode for s in b]:
        raise ValueError("both predictions must be scored on the same gold episodes")
    ca, cb = _counts(a, e2e), _counts(b, e2e)
    fa = prf(*ca.sum(axis=0).astype(int).tolist())[2] if len(ca) else 0.0
    fb = prf(*cb.sum(axis=0).astype(int).tolist())[2] if len(cb) else 0.0
    if not len(ca):
        return {"a": fa, "b": fb, "difference": 0.0, "interval": [0.0, 0.0], "draws": 0}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ca), size=(draws, len(ca)))
    diffs = _f1(cb[picks]) - _f1(ca[picks])
    low, high = np.percentile(diffs, [2.5, 97.5])
    return {
        "a": fa,
        "b": fb,
        "difference": fb - fa,
        "interval": [float(low), float(high)],
        "draws": draws,
    }
