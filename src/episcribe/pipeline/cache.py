"""A content-addressed cache of one module's staging rows per episode.

Snakemake decides which *jobs* run; a job of a shard handles several episodes, and
Snakemake deletes all of a job's outputs before re-running it. The cache keeps rebuilds
per-episode in cost: a job re-creates an episode's staging file from the cache when the
episode's result for the *same inputs* is already known, and asks the model only for the
rest. It also makes an interrupted run resume where it stopped: each episode's rows are
cached the moment they are done.

The key covers everything that can change a module's answer: the module's prompt and
schema texts, its config section, the model identity, the seed, the episode's data
fingerprint and the upstream staging rows it reads. Entries are never updated in place;
a changed input is a new key. ``rm -r results/<dataset>/cache`` clears it.

Only complete episodes are cached: an episode with a failed model call is staged (so
this run validates and writes what it has) but not cached, and is recorded in
``incomplete/episode_{N:06d}.json`` with how many of its deliveries were incomplete. The
workflow passes those counts to the episode's job as a param, so the next ``snakemake``
run re-runs that job, and the job asks the model again for exactly those episodes (the
others come from the cache). The count only grows, so once the episode is complete the
param stays as it was and nothing re-runs again. The re-run asks the model only for the
calls that failed: the answers that arrived are kept per call
(:mod:`episcribe.pipeline.call_answers`).

Asking the model anew for an episode whose answers are cached is an explicit act,
:func:`redo` (``episcribe redo``): it forgets the episode's entry and
removes its staging file. A staging file that is merely missing (Snakemake removes a
job's outputs before it runs it, and a failed job leaves them removed) is restored from
the cache, never taken as a wish to redo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from episcribe.atomic import write_json, write_text
from episcribe.pipeline.call_answers import answers_dir
from episcribe.pipeline.staging import read_rows, staging_file, write_rows


def digest(obj: object) -> str:
    """A stable hash of JSON-able data (sorted keys, no whitespace variance)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EpisodeCache:
    def __init__(self, root: str | Path, module: str, identity: str):
        """``identity`` is :func:`digest` of what is shared by all episodes of the job."""
        self.module = module
        self.dir = Path(root) / module
        self.identity = identity

    def key(self, fingerprint: str, upstream: dict[str, list[dict]]) -> str:
        return digest({"job": self.identity, "episode": fingerprint, "upstream": upstream})

    def _path(self, key: str) -> Path:
        return _entry(self.dir, key)

    def get(self, key: str) -> list[dict] | None:
        path = self._path(key)
        return read_rows(path) if path.exists() else None

    def put(self, key: str, rows: list[dict]) -> None:
        write_rows(self._path(key), rows)

    def deliver(self, key: str, rows: list[dict], staging_dir: Path, episode: int) -> None:
        """Write the episode's staging file and remember which entry it came from."""
        write_rows(staging_file(staging_dir, episode, self.module), rows)
        write_text(_delivered(self.dir, episode), key)


def _entry(module_dir: Path, key: str) -> Path:
    return module_dir / key[:2] / f"{key}.jsonl"


def _delivered(module_dir: Path, episode: int) -> Path:
    return module_dir / "delivered" / f"episode_{episode:06d}"


def _incomplete(module_dir: Path, episode: int) -> Path:
    return module_dir / "incomplete" / f"episode_{episode:06d}.json"


def record_delivery(
    cache_root: str | Path, module: str, episode: int, *, failed_calls: int, skipped: int
) -> None:
    """Note whether the episode's staged rows are complete (no failed model call).

    Incomplete: its count of incomplete deliveries grows by one. Complete: an existing
    record keeps its count (so the job's param does not change) and drops its failures.
    """
    path = _incomplete(Path(cache_root) / module, episode)
    record = json.loads(path.read_text()) if path.exists() else None
    if failed_calls == 0 and record is None:
        return
    runs = (record or {}).get("runs", 0) + (failed_calls > 0)
    write_json(path, {"runs": runs, "failed_calls": failed_calls, "skipped": skipped})


def _records(cache_root: str | Path, module: str) -> dict[int, dict]:
    directory = Path(cache_root) / module / "incomplete"
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    records = {}
    for name in names:  # a temporary file a killed write left is no record
        number = name.removeprefix("episode_").removesuffix(".json")
        if name.endswith(".json") and number.isdigit():
            records[int(number)] = json.loads((directory / name).read_text())
    return dict(sorted(records.items()))


def incomplete_runs(cache_root: str | Path, module: str) -> dict[int, int]:
    """Episode -> how many of its deliveries were incomplete (episodes ever incomplete)."""
    return {episode: r["runs"] for episode, r in _records(cache_root, module).items()}


def incomplete_episodes(cache_root: str | Path, module: str) -> dict[int, dict]:
    """Episode -> its record, for the episodes whose staged rows lack failed answers."""
    return {e: r for e, r in _records(cache_root, module).items() if r["failed_calls"]}


def redo(
    cache_root: str | Path, staging_dir: str | Path, module: str, episodes: list[int]
) -> list[int]:
    """Forget the cached rows of these episodes and remove their staging files, so the
    next run asks the model again for them; returns the episodes that had rows."""
    module_dir = Path(cache_root) / module
    done = []
    for episode in episodes:
        record = _delivered(module_dir, episode)
        staged = staging_file(staging_dir, episode, module)
        if record.exists():
            _entry(module_dir, record.read_text().strip()).unlink(missing_ok=True)
            record.unlink()
        shutil.rmtree(answers_dir(cache_root, module, episode), ignore_errors=True)
        if staged.exists():
            staged.unlink()
            done.append(episode)
    return done


def main(argv: list[str] | None = None) -> None:
    """``episcribe redo results/<dataset> [--modules ...] --episodes ...``"""
    import argparse

    from episcribe.pipeline.staging import MODULES

    parser = argparse.ArgumentParser(
        prog="episcribe",
        description="Ask the model again for some episodes at the next run.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("redo", help="forget cached rows and staging files of episodes")
    cmd.add_argument("results", type=Path, help="the run's results/<dataset> directory")
    cmd.add_argument("--episodes", type=int, nargs="+", required=True)
    cmd.add_argument("--modules", nargs="+", choices=MODULES, default=list(MODULES))
    args = parser.parse_args(argv)
    if not (args.results / "staging").is_dir():
        parser.error(f"{args.results} has no staging/ directory: give results/<dataset>")
    for module in args.modules:
        done = redo(args.results / "cache", args.results / "staging", module, args.episodes)
        print(f"{module}: {len(done)} episode(s) will be annotated anew: {done}")
    print("Run the workflow again to annotate them.")
