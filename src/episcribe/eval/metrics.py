"""The WGO-Bench metrics, as independent groups reproduce them.

**Segmentation F1.** Per episode the prediction's first start and last end are set to
gold's first start and last end (the outer edges are never scored). Predicted and gold
segments are then matched one-to-one, greedily by temporal IoU, highest pair first; a
pair counts only when its IoU is at least 0.75. Over the corpus (pooled, not averaged
per episode): precision = matched / predicted segments, recall = matched / gold
segments, F1 their harmonic mean. An episode of gold that the prediction lacks counts
with no predicted segment (its gold segments lower the recall).

**Labeling accuracy.** With gold boundaries fixed, the model labels each gold segment; a
judge accepts the label when it names the same completed event as gold's. Accuracy =
accepted / gold segments.

**End-to-end F1.** As segmentation F1, counting only the matches whose predicted label
the judge accepts (so it is at most the segmentation F1).

Times are compared in whole milliseconds, as integers: the benchmark gives seconds with 3
decimals, and a dataset's float32 timestamps (2.0999999 for 2.1) round to the same
millisecond. An IoU of exactly 0.75 is then decided exactly (``4 * overlap >= 3 * union``)
rather than by float rounding, which would put such a pair on either side of the line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

IOU_THRESHOLD = Fraction(3, 4)

Judge = Callable[[str, str], bool]  # (predicted label, gold label) -> accepted


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the episode's start
    end: float
    label: str = ""

    @property
    def ms(self) -> tuple[int, int]:
        return round(self.start * 1000), round(self.end * 1000)


def iou(a: Segment, b: Segment) -> Fraction:
    """Temporal intersection over union, exact on whole milliseconds (0 for no overlap)."""
    (a0, a1), (b0, b1) = a.ms, b.ms
    overlap = max(0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    if overlap == 0 or union <= 0:
        return Fraction(0)
    return Fraction(overlap, union)


def snap_outer_edges(pred: Sequence[Segment], gold: Sequence[Segment]) -> list[Segment]:
    """The prediction in time order with its first start and last end set to gold's.

    A segment the snap turns inside out (it ended before gold starts) keeps zero length:
    it still counts as a predicted segment, and matches nothing.
    """
    if not pred or not gold:
        return sorted(pred, key=lambda s: (s.start, s.end))
    out = sorted(pred, key=lambda s: (s.start, s.end))
    first = min(g.start for g in gold)
    last = max(g.end for g in gold)
    out[0] = Segment(first, max(first, out[0].end), out[0].label)
    tail = out[-1]
    out[-1] = Segment(min(tail.start, last), last, tail.label)
    return out


def greedy_matches(
    pred: Sequence[Segment], gold: Sequence[Segment], threshold: Fraction = IOU_THRESHOLD
) -> list[tuple[int, int, Fraction]]:
    """One-to-one (pred index, gold index, IoU) pairs, highest IoU first, IoU >= threshold.

    Equal IoUs are taken in order of gold index, then predicted index (earliest first), so
    the result never depends on input order beyond the segments' own order.
    """
    pairs = [
        (value, g, p)
        for p, ps in enumerate(pred)
        for g, gs in enumerate(gold)
        if (value := iou(ps, gs)) >= threshold
    ]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for value, g, p in pairs:
        if p in used_p or g in used_g:
            continue
        used_p.add(p)
        used_g.add(g)
        out.append((p, g, value))
    return sorted(out, key=lambda t: t[1])


@dataclass
class EpisodeScore:
    episode: int
    predicted: int
    gold: int
    matched: int
    accepted_matches: int | None  # matches whose label the judge accepts (None: no judge)
    accepted_labels: int | None = None
    pairs: list[tuple[int, int, float]] = field(default_factory=list)

    def to_json(self) -> dict:
        p, r, f = prf(self.matched, self.predicted, self.gold)
        return {
            "episode": self.episode,
            "predicted": self.predicted,
            "gold": self.gold,
            "matched": self.matched,
            "precision": p,
            "recall": r,
            "f1": f,
            "end_to_end_matched": self.accepted_matches,
            "labeling_accepted": self.accepted_labels,
            "pairs": [{"pred": a, "gold": b, "iou": round(v, 4)} for a, b, v in self.pairs],
        }


def score_episode(
    episode: int,
    pred: Sequence[Segment],
    gold: Sequence[Segment],
    judge: Judge | None = None,
    gold_labels: Sequence[str] | None = None,
) -> EpisodeScore:
    """Segmentation (and, with a judge, end-to-end and labeling) counts of one episode.

    ``gold_labels``: the model's labels for the gold spans, in gold's order (labeling
    accuracy needs them; a missing one is not accepted).
    """
    gold = sorted(gold, key=lambda s: (s.start, s.end))
    snapped = snap_outer_edges(pred, gold)
    pairs = greedy_matches(snapped, gold)
    accepted = None
    if judge is not None:
        accepted = sum(1 for p, g, _ in pairs if judge(snapped[p].label, gold[g].label))
    accepted_labels = None
    if gold_labels is not None and judge is not None:
        accepted_labels = sum(
            1
            for label, g in zip(gold_labels, gold, strict=False)
            if label and judge(label, g.label)
        )
    return EpisodeScore(
        episode=episode,
        predicted=len(snapped),
        gold=len(gold),
        matched=len(pairs),
        accepted_matches=accepted,
        accepted_labels=accepted_labels,
        pairs=[(p, g, float(v)) for p, g, v in pairs],
    )


def prf(matched: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 (0 where a denominator is 0)."""
    precision = matched / predicted if predicted else 0.0
    recall = matched / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def pooled(scores: Iterable[EpisodeScore]) -> dict:
    """Corpus scores: counts summed over episodes, then the ratios (the benchmark's way)."""
    scores = list(scores)
    predicted = sum(s.predicted for s in scores)
    gold = sum(s.gold for s in scores)
    matched = sum(s.matched for s in scores)
    p, r, f = prf(matched, predicted, gold)
    out = {
        "episodes": len(scores),
        "predicted": predicted,
        "gold": gold,
        "matched": matched,
        "precision": p,
        "recall": r,
        "f1": f,
        "end_to_end_f1": None,
        "labeling_accuracy": None,
    }
    if scores and all(s.accepted_matches is not None for s in scores):
        out["end_to_end_f1"] = prf(sum(s.accepted_matches for s in scores), predicted, gold)[2]
    if scores and all(s.accepted_labels is not None for s in scores):
        out["labeling_accuracy"] = sum(s.accepted_labels for s in scores) / gold if gold else 0.0
    return out


def mean_per_episode_f1(scores: Iterable[EpisodeScore]) -> float:
    """The per-episode F1 averaged over episodes: NOT the benchmark's number (see pooled)."""
    values = [prf(s.matched, s.predicted, s.gold)[2] for s in scores]
    return sum(values) / len(values) if values else 0.0


def score_corpus(
    pred: Mapping[int, Sequence[Segment]],
    gold: Mapping[int, Sequence[Segment]],
    judge: Judge | None = None,
    gold_labels: Mapping[int, Sequence[str]] | None = None,
) -> list[EpisodeScore]:
    """One score per gold episode (a prediction's episodes that gold lacks are ignored)."""
    return [
        score_episode(
            ep,
            pred.get(ep, ()),
            gold[ep],
            judge,
            None if gold_labels is None else gold_labels.get(ep, ()),
        )
        for ep in sorted(gold)
    ]
