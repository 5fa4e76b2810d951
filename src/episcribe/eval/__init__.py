"""Measuring the annotations: WGO-Bench import, the benchmark's metrics, ``episcribe eval``.

- ``metrics``: segmentation F1, labeling accuracy and end-to-end F1 (pure functions);
- ``sources``: gold and predicted segments from a JSONL file, a results directory or an
  annotated LeRobot dataset;
- ``wgo``: a WGO-format parquet (or ``macrodata/WGO-Bench`` on the Hub) -> a LeRobot v3
  dataset + ``gold.jsonl``;
- ``judge``: whether a predicted label names the gold event (exact match or the model);
- ``compare``: a paired bootstrap interval of the difference between two predictions;
- ``cost``: model calls and tokens per hour of video from a run's call records;
- ``command``: the ``import-wgo`` and ``eval`` subcommands.
"""
