"""The answers an incomplete episode got, kept per call so that its re-run asks only for
the calls that failed.

An episode with a failed call is not cached (:mod:`episcribe.pipeline.cache`), and its re-run
runs the module again. Without this, every call of the episode went to the model again:
one failed VQA call cost the episode's whole VQA set. :class:`AnswerMemory` stands in
for the job's client for one episode: each answer that arrives is written (atomically)
under a key made of the job's identity and the exact request body (model, messages with
their images, answer schema, token budget, sampling settings), and an identical request
on the re-run is answered from it. A call whose messages changed (a later call of a
chain whose earlier answer is new) is a new key and goes to the model.

The answers live in ``cache/<module>/answers/episode_{N:06d}/`` only while the episode
is incomplete: once it is complete (cached whole) or redone (``episcribe redo``), the
directory is removed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from episcribe.atomic import write_json


def answers_dir(cache_root: str | Path, module: str, episode: int) -> Path:
    return Path(cache_root) / module / "answers" / f"episode_{episode:06d}"


class AnswerMemory:
    """One episode's view of the job's client that reuses the answers it already got."""

    def __init__(self, client: Any, directory: Path, identity: str):
        self.client = client
        self.directory = directory
        self.identity = identity
        self.reused = 0

    def __getattr__(self, name: str) -> Any:  # budgets, stats: the client's own
        return getattr(self.client, name)

    async def complete_json(
        self, kind: str, messages: list[dict], schema: dict, *, temperature: float | None = None
    ) -> dict | None:
        body = self.client.request_body(kind, messages, schema, temperature)
        key = hashlib.sha256(self.identity.encode() + b"\0" + body).hexdigest()
        path = self.directory / f"{key}.json"
        if path.is_file():
            self.reused += 1
            return json.loads(path.read_text(encoding="utf-8"))
        answer = await self.client.complete_json(kind, messages, schema, temperature=temperature)
        if answer is not None:
            write_json(path, answer)
        return answer

    def forget(self) -> None:
        """The episode is complete (or redone): its answers are no longer needed."""
        shutil.rmtree(self.directory, ignore_errors=True)
