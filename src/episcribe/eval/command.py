"""``episcribe import-wgo`` and ``episcribe eval``: argument parsing and the printed tables."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from episcribe.atomic import write_json
from episcribe.errors import UserError
from episcribe.eval import judge as judges
from episcribe.eval.compare import paired_bootstrap
from episcribe.eval.cost import run_cost
from episcribe.eval.metrics import EpisodeScore, pooled, score_corpus
from episcribe.eval.sources import VIEW_NOTES, WRITTEN, Source, read_source

IMPORT_HELP = """\
usage: episcribe import-wgo [PARQUET ...] [--repo-id macrodata/WGO-Bench] --out DIR [--fps F]

Turn a WGO-format parquet (WGO-Bench: id, video, instruction, segments, metadata) into a
LeRobot v3 dataset (DIR/dataset) that the workflow annotates as it is, with the gold
subtasks in DIR/gold.jsonl and episode -> row id in DIR/episodes.json. WGO-Bench is
CC-BY-NC-SA-4.0: keep DIR out of any repository.
"""


def import_main(argv: list[str]) -> int:
    from episcribe.eval.wgo import REPO_ID, download, import_wgo  # PyAV: only the import needs it

    p = argparse.ArgumentParser(prog="episcribe import-wgo", usage=IMPORT_HELP)
    p.add_argument("parquet", nargs="*", type=Path)
    p.add_argument("--repo-id", default=None, help=f"Hub dataset to download (e.g. {REPO_ID})")
    p.add_argument("--revision", default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--fps", type=float, default=None, help="dataset fps (default: most common)")
    args = p.parse_args(argv)
    sources = list(args.parquet)
    if args.repo_id:
        sources += download(args.repo_id, args.revision, args.out / "source")
    if not sources:
        raise UserError("import-wgo needs a parquet file or --repo-id macrodata/WGO-Bench")
    for path in sources:
        if not path.is_file():
            raise UserError(f"{path} does not exist")
    done = import_wgo(sources, args.out, args.fps)
    for line in done.skipped:
        print(f"episcribe: skipped {line}", file=sys.stderr)
    print(
        f"episcribe: imported {done.episodes} episodes ({len(done.skipped)} rows skipped) into "
        f"{done.dataset}; gold subtasks in {done.gold}\n"
        f"next: episcribe --config dataset.root={done.dataset}, then episcribe eval --gold "
        f"{done.gold} --pred results/{done.dataset.name}"
    )
    return 0


def eval_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="episcribe eval",
        description="Score predicted subtasks against gold (WGO-Bench metrics).",
    )
    p.add_argument("--gold", required=True, type=Path, help="JSONL, results dir or dataset")
    p.add_argument("--pred", required=True, type=Path, action="append", help="(repeatable)")
    p.add_argument(
        "--judge",
        choices=("exact", "model"),
        default="exact",
        help="exact: normalised string equality (a lower bound); model: the served model "
        "decides (vlm.* settings from --config/--configfile, as for a run)",
    )
    p.add_argument(
        "--label-gold",
        type=Path,
        default=None,
        metavar="DATASET",
        help="labeling accuracy: the served model labels each gold span from its frames in "
        "DATASET (the imported dataset), with prompts/label_segment.txt",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the scores here")
    p.add_argument(
        "--plots",
        type=Path,
        default=None,
        metavar="DIR",
        help="per episode, gold and predicted subtask bars on one timeline (PNG), worst "
        "first in DIR/index.html",
    )
    p.add_argument(
        "--config", nargs="*", default=[], help="KEY=VALUE (dotted): vlm.*, prompts.dir, ..."
    )
    p.add_argument("--configfile", nargs="+", default=[])
    args = p.parse_args(argv)
    gold = read_source(args.gold)
    if not gold.segments:
        raise UserError(f"{args.gold} holds no gold segments")
    preds = [read_source(path) for path in args.pred]
    judge, note, labels = judges.exact, judges.EXACT_NOTE, None
    if args.judge == "model" or args.label_gold:
        from episcribe.eval.served import ask_model

        judge, note, labels = ask_model(gold, preds, args)
    report: dict = {"gold": str(args.gold), "judge": f"{args.judge} {note}", "predictions": []}
    if labels is not None:
        report["labeling"] = labeling(gold, labels, judge)
        print_labeling(report["labeling"], note)
    scored: list[dict[str, list[EpisodeScore]]] = []
    for pred in preds:
        entry = evaluate(gold, pred, judge)
        report["predictions"].append(entry)
        scored.append(entry.pop("_scores"))
        print_prediction(entry, note)
    written = [by_view[WRITTEN] for by_view in scored]
    if len(written) == 2:
        report["comparison"] = {
            "segmentation_f1": paired_bootstrap(*written),
            "end_to_end_f1": paired_bootstrap(*written, e2e=True),
        }
        print_comparison(report["comparison"], args.pred, note)
    if args.json:
        write_json(args.json, report)
    if args.plots:
        from episcribe.eval.plots import write_page

        named = [(str(p.path), p.views, by_view) for p, by_view in zip(preds, scored, strict=True)]
        page = write_page(args.plots, gold.segments, gold.families, named)
        print(f"\nper-episode timelines, worst first: {page}")
    return 0


def evaluate(gold: Source, pred: Source, judge) -> dict:
    """Scores of every view of ``pred``: overall, per source family, per episode."""
    views = {}
    by_view: dict[str, list[EpisodeScore]] = {}
    for view, segments in pred.views.items():
        scores = by_view[view] = score_corpus(segments, gold.segments, judge, pred.gold_labels)
        families = defaultdict(list)
        for s in scores:
            families[gold.families.get(s.episode, "all")].append(s)
        views[view] = {
            "what": VIEW_NOTES[view],
            "overall": pooled(scores),
            "families": {f: pooled(v) for f, v in sorted(families.items())}
            if len(families) > 1
            else {},
            "episodes": [
                {**s.to_json(), "source_family": gold.families.get(s.episode)} for s in scores
            ],
        }
    seconds = sum(
        gold.durations.get(ep, max((s.end for s in segs), default=0.0))
        for ep, segs in gold.segments.items()
    )
    cost = run_cost(pred.results_dir, seconds) if pred.results_dir else None
    return {
        "path": str(pred.path),
        "unmatched_episodes": sorted(set(pred.segments) - set(gold.segments)),
        "missing_episodes": sorted(set(gold.segments) - set(pred.segments)),
        "views": views,
        "cost": cost,
        "_scores": by_view,
    }


def labeling(gold: Source, labels: dict[int, list[str]], judge) -> dict:
    """Labeling accuracy of the model's labels for the gold spans, overall and per family."""
    episodes = []
    for ep, segments in sorted(gold.segments.items()):
        spans = sorted(segments, key=lambda s: (s.start, s.end))
        given = labels.get(ep, [])
        accepted = [bool(lab) and judge(lab, s.label) for lab, s in zip(given, spans, strict=False)]
        episodes.append(
            {
                "episode": ep,
                "source_family": gold.families.get(ep),
                "gold": len(spans),
                "accepted": sum(accepted),
                "labels": [
                    {"gold": s.label, "predicted": lab, "accepted": ok}
                    for s, lab, ok in zip(spans, given, accepted, strict=False)
                ],
            }
        )
    families: dict[str, list[dict]] = defaultdict(list)
    for e in episodes:
        families[e["source_family"] or "all"].append(e)

    def accuracy(rows: list[dict]) -> float:
        total = sum(r["gold"] for r in rows)
        return sum(r["accepted"] for r in rows) / total if total else 0.0

    return {
        "accuracy": accuracy(episodes),
        "gold_segments": sum(e["gold"] for e in episodes),
        "families": {f: accuracy(rows) for f, rows in sorted(families.items())}
        if len(families) > 1
        else {},
        "episodes": episodes,
    }


def print_labeling(result: dict, note: str) -> None:
    families = ", ".join(f"{f} {a:.3f}" for f, a in result["families"].items())
    print(
        f"\nlabeling accuracy (the model labels the {result['gold_segments']} gold spans): "
        f"{result['accuracy']:.3f}" + (f" ({families})" if families else "") + f"; judge: {note}"
    )


def _fmt(value) -> str:
    return "    -" if value is None else f"{value:5.3f}"


def print_prediction(entry: dict, note: str) -> None:
    print(f"\n{entry['path']}")
    if entry["missing_episodes"]:
        missing = entry["missing_episodes"]
        print(f"  {len(missing)} gold episode(s) have no prediction (scored as none): {missing}")
    header = (
        f"  {'':<38} {'eps':>4} {'gold':>5} {'pred':>5} {'match':>5}  {'P':>5} {'R':>5} "
        f"{'F1':>5}  {'label':>5} {'e2e F1':>6}"
    )
    print(header)
    for view, result in entry["views"].items():
        rows = [(VIEW_NOTES[view], result["overall"])]
        if view == WRITTEN:
            rows += [(f"  {family}", s) for family, s in result["families"].items()]
        for name, s in rows:
            print(
                f"  {name:<38} {s['episodes']:>4} {s['gold']:>5} {s['predicted']:>5} "
                f"{s['matched']:>5}  {_fmt(s['precision'])} {_fmt(s['recall'])} "
                f"{_fmt(s['f1'])}  {_fmt(s['labeling_accuracy'])} {_fmt(s['end_to_end_f1'])}"
            )
    print(f"  label = labeling accuracy, e2e = end-to-end; judge: {note}")
    cost = entry["cost"]
    if cost:
        rate = cost["per_video_hour"]
        print(
            f"  per video hour ({cost['video_hours'] * 60:.1f} min of video): "
            f"{rate['calls']:.0f} model calls, {rate['uncached_prompt_tokens']:.0f} uncached "
            f"prompt tokens, {rate['completion_tokens']:.0f} completion tokens "
            "(the jobs that last ran)"
        )


def print_comparison(comparison: dict, paths: list[Path], note: str) -> None:
    print(f"\n{paths[1]} - {paths[0]} (paired bootstrap over episodes, 95 %):")
    for name, c in comparison.items():
        low, high = c["interval"]
        verdict = "beyond noise" if low > 0 or high < 0 else "within noise"
        label = f"{name} {note}" if name == "end_to_end_f1" else name
        print(
            f"  {label}: {c['a']:.3f} -> {c['b']:.3f}, difference {c['difference']:+.3f} "
            f"[{low:+.3f}, {high:+.3f}] {verdict}"
        )
