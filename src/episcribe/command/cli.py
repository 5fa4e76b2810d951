"""``episcribe``: the researcher's command.

It runs the workflow that ships inside this package (``episcribe/workflow_files``) with
the working directory as the place for results and logs, so it works from any
directory. Config keys are written with dots (``--config plan.enabled=false``), which
Snakemake refuses, so they are rewritten to ``plan__enabled=false`` (the workflow expands
them back); every other argument goes to ``snakemake`` unchanged.
"""

from __future__ import annotations

import sys
from importlib import metadata

from episcribe import WORKFLOW_DIR, __version__
from episcribe.config import dotted_to_snakemake
from episcribe.errors import UserError

SECRET_KEYS = {"vlm.api_key", "vlm__api_key"}
# Snakemake options that start no job: no model is needed, no progress to show.
NO_JOB_FLAGS = {"-n", "--dry-run", "--dryrun", "--unlock", "--summary", "-S", "--lint",
                "--list-rules", "-l", "--dag", "--rulegraph", "--report", "--cleanup-metadata",
                "--list-changes", "--lc", "--touch", "-t"}  # fmt: skip

HELP = """\
usage: episcribe [run] [OPTIONS] --config KEY=VALUE ...
       episcribe report [OPTIONS] --config KEY=VALUE ...
       episcribe redo results/<dataset> --episodes N [N ...] [--modules M ...]
       episcribe review [results/<dataset>] [--host HOST] [--port N]
       episcribe stop-server
       episcribe import-wgo [PARQUET ...] [--repo-id macrodata/WGO-Bench] --out DIR
       episcribe eval --gold GOLD --pred PRED [--pred PRED2] [--judge exact|model]
                      [--label-gold DATASET] [--json OUT] [--plots DIR]
                      [--config KEY=VALUE ...]
       episcribe --help | --version

Annotate a LeRobot v3 dataset with a vision-language model: subtasks, plans, memory,
interjections with the robot's reply, and visual Q&A, written into the dataset's
language columns. Results, logs and the model server's state go into the current
directory (results/, logs/, .episcribe/); run the same command again to resume.

commands:
  run           annotate, validate, write the dataset and its report (the default)
  report        build report.html, one self-contained page, from the last run
  redo          ask the model again for these episodes at the next run (forgets their
                cached answers; all modules, or the ones named)
  review        a web page to watch each episode with its annotations and correct them;
                corrections go to results/<dataset>/review/ and into the next run's
                dataset (episcribe review --help)
  stop-server   stop this directory's model server, if one is left running
  import-wgo    WGO-Bench (or a file in its format) -> a LeRobot dataset + gold.jsonl
  eval          score predicted subtasks against gold: segmentation F1, labeling
                accuracy, end-to-end F1, cost per video hour (README: Measuring quality)

common config keys (--config key=value, dotted; config.yaml in the package lists all):
  dataset.root=DIR            the LeRobot v3 dataset to annotate (required)
  dataset.only_episodes=[0,5] annotate these episodes only
  output.root=DIR             where the annotated dataset goes
                              (default results/<dataset>/annotated)
  vlm.model_id=NAME           the model vLLM serves (default Qwen/Qwen3.6-27B)
  vlm.backend=vllm|openai|fake  start vLLM here, use a running endpoint, or a fake model
  vlm.api_base=URL            the endpoint, e.g. http://gpu-box:8000/v1
  vlm.api_key_env=NAME        the environment variable that holds the API key
                              (default OPENAI_API_KEY; never put the key itself on the
                              command line or in a config file)
  plan.enabled=false, interjections.enabled=false, vqa.enabled=false   skip a module

episcribe options:
  --show-jobs                 print Snakemake's block for every job (hidden by default)
  --progress-every SECONDS    outside a terminal (a log file, SLURM), print the progress
                              line this often (default 30); a terminal shows a live table
  --configfile FILE           your own config file, layered over the defaults
  any other option is Snakemake's (e.g. --cores 8, --dry-run, --profile DIR)

examples:
  episcribe --config dataset.root=/data/my_dataset
  episcribe --dry-run --config dataset.root=/data/my_dataset vqa.enabled=false
  OPENAI_API_KEY=... episcribe --config dataset.root=/data/d vlm.backend=openai \\
      vlm.api_base=http://gpu-box:8000/v1
  episcribe report --config dataset.root=/data/my_dataset

Ctrl-C stops a run and keeps every finished episode; SIGTERM (SLURM time limits,
`timeout`) does the same. Episodes whose model calls failed are asked again by the next
run; to redo others, `episcribe redo results/<dataset> --episodes 3 5` and run again
(a deleted staging file is restored from the cache, not redone).
"""


def version() -> str:
    return (
        f"episcribe {__version__} "
        f"(snakemake {metadata.version('snakemake')}, Python {sys.version.split()[0]})"
    )


def translate(args: list[str]) -> list[str]:
    """Rewrite dotted ``--config`` keys for Snakemake; refuse secrets on the command line."""
    out: list[str] = []
    in_config = False
    for arg in args:
        if arg.startswith("-"):
            in_config = arg in ("--config", "-C")
        elif in_config and "=" in arg:
            if arg.partition("=")[0] in SECRET_KEYS:
                raise UserError(
                    "refusing vlm.api_key on the command line: it would show in `ps` and "
                    "in Snakemake's logs. Export the key as OPENAI_API_KEY (or the variable "
                    "named by vlm.api_key_env) and run again"
                )
            arg = dotted_to_snakemake(arg)
        out.append(arg)
    return out


def snakemake_args(args: list[str]) -> list[str]:
    """The snakemake command line for ``episcribe run ARGS``."""
    args = translate(args)
    given = {arg.split("=", 1)[0] for arg in args if arg.startswith("-")}
    extra: list[str] = []
    if not given & {"-s", "--snakefile"}:
        extra += ["--snakefile", str(WORKFLOW_DIR / "Snakefile")]
    if not given & {"-c", "--cores", "-j", "--jobs", "--profile"}:
        extra += ["--cores", "all"]
    return [sys.executable, "-m", "snakemake", *extra, *args]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0
    if args[0] == "--version":
        print(version())
        return 0
    commands = ("run", "report", "redo", "review", "stop-server", "import-wgo", "eval")
    command = args.pop(0) if args[0] in commands else "run"
    try:
        if command in ("import-wgo", "eval"):
            from episcribe.eval import command as measure

            return (measure.import_main if command == "import-wgo" else measure.eval_main)(args)
        if command == "stop-server":
            return _stop_server(args)
        if command == "review":
            from episcribe.review.command import main as review_main

            return review_main(args)
        if command == "redo":
            from episcribe.pipeline.cache import main as cache_main

            cache_main(["redo", *args])
            return 0
        show_jobs = "--show-jobs" in args
        args = [arg for arg in args if arg != "--show-jobs"]
        every_s, args = _option(args, "--progress-every", 30.0)
        if command == "report":
            args = ["--report", "report.html", *args]
        from episcribe.command import preflight
        from episcribe.command.runner import run

        cmd = snakemake_args(args)
        runs_jobs = command == "run" and not set(cmd) & NO_JOB_FLAGS
        plan = preflight.check(cmd, backend=runs_jobs)
        return run(cmd, plan if runs_jobs else None, show_jobs, every_s)
    except UserError as exc:
        print(f"episcribe: {exc}", file=sys.stderr)
        return 2


def _option(args: list[str], name: str, default: float) -> tuple[float, list[str]]:
    """Take ``name SECONDS`` out of ``args``."""
    if name not in args:
        return default, args
    at = args.index(name)
    try:
        value = float(args[at + 1])
    except (IndexError, ValueError):
        raise UserError(f"{name} takes a number of seconds") from None
    return value, args[:at] + args[at + 2 :]


def _stop_server(args: list[str]) -> int:
    if args:
        raise UserError(f"stop-server takes no arguments (got {' '.join(args)})")
    from episcribe.pipeline.layout import SERVER_RUN_DIR
    from episcribe.vlm import server

    stopped = server.stop(SERVER_RUN_DIR)
    print("episcribe: stopped the model server" if stopped else "episcribe: no server runs here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
