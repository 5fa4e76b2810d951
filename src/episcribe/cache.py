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

Deleting an episode's staging file asks for that episode to be annotated anew, not
restored: each delivered staging file is recorded with the key it came from, and
:func:`forget_deleted` (run by the main snakemake process before any job starts) drops
the entries of staging files that are gone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .atomic import write_text
from .staging import read_rows, staging_file, staging_paths, write_rows


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


def forget_deleted(cache_root: str | Path, staging_dir: str | Path, modules: list[str]) -> int:
    """Drop cached rows whose staging file was deleted since it was written; count them.

    Runs at every snakemake start, over one record per delivered episode and module
    (40,000 at 10,000 episodes), so it lists each ``delivered`` directory once and checks
    the staging files by plain string paths. Names that are not records (a temporary
    file left by a killed write) are skipped.
    """
    forgotten = 0
    for module in modules:
        module_dir = Path(cache_root) / module
        delivered = module_dir / "delivered"
        try:
            names = os.listdir(delivered)
        except (FileNotFoundError, NotADirectoryError):
            continue
        records = {}
        for name in names:
            number = name.removeprefix("episode_")
            if number != name and number.isdigit():
                records[name] = int(number)
        paths = staging_paths(staging_dir, records.values(), module)
        for name, staging in zip(records, paths, strict=True):
            if os.path.exists(staging):
                continue
            record = delivered / name
            key = record.read_text().strip()
            _entry(module_dir, key).unlink(missing_ok=True)
            record.unlink()
            forgotten += 1
    return forgotten
