"""Whether a predicted label names the same completed event as gold's.

``exact``: equal after normalisation (case, punctuation, articles, spacing): a model-free
lower bound, since a paraphrase of the right event is rejected; every table and JSON
that shows it says so.
"""

from __future__ import annotations

import re

EXACT_NOTE = "(exact-match lower bound)"
_WORD = re.compile(r"[a-z0-9]+")
_ARTICLES = {"a", "an", "the"}


def normalise(label: str) -> str:
    return " ".join(w for w in _WORD.findall(label.lower()) if w not in _ARTICLES)


def exact(pred: str, gold: str) -> bool:
    return bool(pred.strip()) and normalise(pred) == normalise(gold)
