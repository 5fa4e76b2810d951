"""Whether a predicted label names the same completed event as gold's.

- ``exact``: equal after normalisation (case, punctuation, articles, spacing): a
  model-free lower bound, since a paraphrase of the right event is rejected; every table
  and JSON that shows it says so.
- ``model``: the served model decides, in a text-only call with a yes/no schema
  (``prompts/judge.txt`` + ``judge.schema.json``), through the run's own client, server
  and ``vlm`` settings, so ``vlm.backend=fake`` works as in a run.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

EXACT_NOTE = "(exact-match lower bound)"
_WORD = re.compile(r"[a-z0-9]+")
_ARTICLES = {"a", "an", "the"}


def normalise(label: str) -> str:
    return " ".join(w for w in _WORD.findall(label.lower()) if w not in _ARTICLES)


def exact(pred: str, gold: str) -> bool:
    return bool(pred.strip()) and normalise(pred) == normalise(gold)


MODEL_NOTE = "(model judge: {model})"
JUDGE_BUDGET = 64  # tokens: {"same_event": false} is ~8


async def model_verdicts(
    pairs: list[tuple[str, str, str]],
    prompts_dir: Path,
    vlm: dict,
    urls: list[str],
) -> dict[tuple[str, str], bool]:
    """The served model's verdict per distinct (predicted, gold) label pair.

    ``pairs`` are (predicted, gold, task). Pairs equal after normalisation are accepted
    without a call; a call that fails is a rejection (logged by the client).
    """
    from episcribe.modules.prompts import PromptSet
    from episcribe.vlm.client import VlmClient, system_message, user_message

    prompt = PromptSet(prompts_dir).get("judge")
    verdicts: dict[tuple[str, str], bool] = {}
    todo: dict[tuple[str, str], str] = {}
    for pred, gold, task in pairs:
        if exact(pred, gold):
            verdicts[(pred, gold)] = True
        elif not pred.strip():
            verdicts[(pred, gold)] = False
        else:
            todo.setdefault((pred, gold), task)

    async with VlmClient.for_run(urls, vlm, {"judge": JUDGE_BUDGET}, temperature=0.0) as client:

        async def one(key: tuple[str, str], task: str) -> None:
            instructions, request = prompt.render_parts(
                task=task or "(not given)", gold=key[1], predicted=key[0]
            )
            messages = [system_message(instructions)] if instructions else []
            messages.append(user_message(request))
            answer = await client.complete_json("judge", messages, prompt.schema)
            verdicts[key] = bool(answer and answer.get("same_event") is True)

        await asyncio.gather(*(one(key, task) for key, task in todo.items()))
    return verdicts
