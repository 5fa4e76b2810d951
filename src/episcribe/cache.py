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
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .staging import read_rows, write_rows


def digest(obj: object) -> str:
    """A stable hash of JSON-able data (sorted keys, no whitespace variance)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EpisodeCache:
    def __init__(self, root: str | Path, module: str, identity: str):
        """``identity`` is :func:`digest` of what is shared by all episodes of the job."""
        self.dir = Path(root) / module
        self.identity = identity

    def key(self, fingerprint: str, upstream: dict[str, list[dict]]) -> str:
        return digest({"job": self.identity, "episode": fingerprint, "upstream": upstream})

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.jsonl"

    def get(self, key: str) -> list[dict] | None:
        path = self._path(key)
        return read_rows(path) if path.exists() else None

    def put(self, key: str, rows: list[dict]) -> None:
        write_rows(self._path(key), rows)
