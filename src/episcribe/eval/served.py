"""The parts of ``eval`` that ask the served model: labels for gold spans, the judge.

The model is reached as a run reaches it: the ``vlm`` section of the config (defaults,
``--configfile``, ``--config``), the server started and stopped through
``episcribe.vlm.server`` in this directory's ``.episcribe/server`` (or a running
endpoint used as is), prompts from ``prompts.dir`` or the workflow's own.
"""

from __future__ import annotations

import asyncio

from episcribe import WORKFLOW_DIR
from episcribe.eval import judge as judges
from episcribe.eval.labeling import label_gold_spans
from episcribe.eval.metrics import score_corpus
from episcribe.eval.sources import Source


def ask_model(gold: Source, preds: list[Source], args) -> tuple:
    """(judge, its note, labels of the gold spans or None), asking the model once each."""
    from episcribe.command.preflight import snakemake_config
    from episcribe.config import dotted_to_snakemake, resolve
    from episcribe.pipeline.layout import SERVER_RUN_DIR
    from episcribe.pipeline.workflow import prompts_dir
    from episcribe.vlm import server
    from episcribe.vlm.server.probe import answers

    cli = ["--config", *map(dotted_to_snakemake, args.config)] if args.config else []
    cli += ["--configfile", *args.configfile] if args.configfile else []
    config = resolve(snakemake_config(cli))
    vlm = config["vlm"]
    prompts = prompts_dir(config, WORKFLOW_DIR / "prompts")
    # Stop only a server this command started, not one a run here still uses.
    started = vlm["backend"] != "openai" and not (
        (SERVER_RUN_DIR / "server.json").is_file() or answers(vlm["api_base"])
    )
    labels = None
    verdicts: dict[tuple[str, str], bool] = {}
    try:
        urls = server.ensure(vlm, SERVER_RUN_DIR)
        if args.label_gold:
            labels = asyncio.run(
                label_gold_spans(gold.segments, gold.tasks, args.label_gold, config, prompts, urls)
            )
        if args.judge == "model":
            pairs = label_pairs(gold, preds, labels)
            verdicts = asyncio.run(judges.model_verdicts(pairs, prompts, vlm, urls))
    finally:
        if started:
            server.stop(SERVER_RUN_DIR)
    if args.judge != "model":
        return judges.exact, judges.EXACT_NOTE, labels

    def judge(pred: str, gold_label: str) -> bool:
        return verdicts.get((pred, gold_label), judges.exact(pred, gold_label))

    model = vlm["model_id"] + (" on the fake server" if vlm["backend"] == "fake" else "")
    return judge, judges.MODEL_NOTE.format(model=model), labels


def label_pairs(
    gold: Source, preds: list[Source], labels: dict[int, list[str]] | None
) -> list[tuple[str, str, str]]:
    """Every (predicted, gold, task) label pair that eval will judge."""
    pairs = []

    def by_time(segments):
        return sorted(segments, key=lambda s: (s.start, s.end))

    for pred in preds:
        for segments in pred.views.values():
            for score in score_corpus(segments, gold.segments, None, pred.gold_labels):
                task = gold.tasks.get(score.episode, "")
                ordered = by_time(segments.get(score.episode, ()))
                golds = by_time(gold.segments[score.episode])
                pairs += [(ordered[p].label, golds[g].label, task) for p, g, _ in score.pairs]
                given = (pred.gold_labels or {}).get(score.episode, [])
                pairs += [(lab, g.label, task) for lab, g in zip(given, golds, strict=False)]
    for ep, given in (labels or {}).items():
        golds = by_time(gold.segments[ep])
        task = gold.tasks.get(ep, "")
        pairs += [(lab, g.label, task) for lab, g in zip(given, golds, strict=False)]
    return pairs
