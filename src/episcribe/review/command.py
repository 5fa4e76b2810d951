"""``episcribe review [RESULTS_DIR | DATASET_DIR]``: start the review server, or export gold."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from episcribe.atomic import write_text
from episcribe.errors import UserError
from episcribe.pipeline.layout import Layout

USAGE = """\
episcribe review [RESULTS_DIR | DATASET_DIR] [--dataset DIR] [--host HOST] [--port N]
episcribe review RESULTS_DIR --export-gold FILE

Watch each episode with its annotations in a browser, correct them, and keep the
corrections (results/<dataset>/review/; the next run writes them into the dataset).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="episcribe review", usage=USAGE)
    p.add_argument(
        "path",
        nargs="?",
        help="results/<dataset> of a run, or the dataset itself (its results/<name> in the "
        "current directory); default: the only results/* here",
    )
    p.add_argument("--dataset", help="the dataset's directory, if the run's report lacks it")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 shares "
        "the page with a trusted network, the token still required)",
    )
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument(
        "--export-gold",
        metavar="FILE",
        help="write the reviewed episodes' subtasks for `episcribe eval --gold` and exit",
    )
    return p


def results_dir(path: str | None) -> tuple[Path, Path | None]:
    """The results directory, and the dataset when ``path`` names the dataset itself."""
    if path is None:
        found = sorted(p for p in Path("results").glob("*") if (p / "staging").is_dir())
        if len(found) != 1:
            raise UserError(
                "name the run to review: episcribe review results/<dataset> "
                f"({len(found)} runs in {Path('results').resolve()})"
            )
        return found[0], None
    given = Path(path)
    if (given / "meta" / "info.json").is_file():
        return Layout(given.resolve().name).results, given
    if not given.is_dir():
        raise UserError(f"{given}: no such directory (a results/<dataset> or a dataset)")
    return given, None


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    from episcribe.review.store import ReviewStore, gold_lines

    results, dataset = results_dir(args.path)
    if args.export_gold:
        write_text(args.export_gold, gold_lines(results))
        print(f"episcribe review: reviewed subtasks written to {args.export_gold}")
        return 0
    from episcribe.review.server import serve

    store = ReviewStore(results, args.dataset or dataset)
    try:
        serve(store, args.host, args.port)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    print("episcribe review: stopped", file=sys.stderr)
    return 0
