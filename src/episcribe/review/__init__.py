"""``episcribe review``: watch each episode with its annotations, correct them, keep them.

:mod:`.store` reads a run's rows and writes a person's review (the ``review`` module's
files, under ``results/<dataset>/review/``); :mod:`.server` serves the pages in
``assets/`` (plain HTML and JavaScript, no build step) over it. Reviewed episodes are gold:
:func:`gold_segments` gives their subtasks as ``episcribe eval --gold`` reads them, and the
server keeps ``review/gold.jsonl`` up to date.
"""

from episcribe.review.store import gold_lines, gold_segments

__all__ = ["gold_lines", "gold_segments"]
