"""Labeling accuracy's first half: the served model names each gold span.

WGO-Bench fixes the boundaries to gold's and asks the model to label each segment. Here
one ``label_segment`` call per gold span (``prompts/label_segment.txt``) gets that span's
frames of the run's camera, sampled at ``plan.frames_per_second`` (at most
``MAX_FRAMES``, evenly thinned), packed into the same timestamped contact sheets the plan
module sends, through the run's client and ``vlm`` settings. A judge then decides each
label (``judge``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from episcribe.eval.metrics import Segment
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.modules.base import FrameSource, clean_text, format_times, sample_times
from episcribe.modules.plan import sheet_grid
from episcribe.modules.plan.windows import thin

MAX_FRAMES = 8  # two contact sheets: a step is seconds long, its frames change little
LABEL_BUDGET = 128  # tokens: {"instruction": "<= 12 words"} is ~25


async def label_gold_spans(
    gold: dict[int, list[Segment]],
    tasks: dict[int, str],
    dataset_root: Path,
    config: dict,
    prompts_dir: Path,
    urls: list[str],
) -> dict[int, list[str]]:
    """Per gold episode, the model's label of each gold span in time order ("" if failed)."""
    from episcribe.modules.prompts import PromptSet
    from episcribe.vlm.client import VlmClient, system_message, user_message

    dataset = LeRobotDataset.open(dataset_root)
    vlm = config["vlm"]
    camera = vlm["camera_key"] or dataset.cameras[0]
    prompt = PromptSet(prompts_dir).get("label_segment")
    rate = config["plan"]["frames_per_second"]
    episodes = asyncio.Semaphore(config["workflow"]["episode_concurrency"])

    async with VlmClient.for_run(urls, vlm, {"label_segment": LABEL_BUDGET}) as client:

        async def one(frames: FrameSource, span: Segment, task: str, ts) -> str:
            first, last = float(ts[0]), float(ts[-1])
            times = sample_times(ts, span.start, min(span.end, last), rate)
            times = times or sample_times(ts, span.start, span.start, 1.0)  # its nearest frame
            times = thin(times, MAX_FRAMES)
            images, layout = await frames.sheets(camera, times, sheet_grid(config["plan"]))
            instructions, request = prompt.render_parts(
                camera=camera,
                layout=layout,
                timestamps=format_times(times),
                task=task or "(not given)",
                start=f"{span.start:.3f}",
                end=f"{span.end:.3f}",
                first=f"{first:.3f}",
                last=f"{last:.3f}",
            )
            messages = [system_message(instructions)] if instructions else []
            messages.append(user_message(request, images))
            answer = await client.complete_json("label_segment", messages, prompt.schema)
            return clean_text((answer or {}).get("instruction"))

        async def episode(index: int) -> list[str]:
            async with episodes:
                ep = dataset.load_episode(index)
                frames = FrameSource(dataset, ep, vlm)
                task = tasks.get(index) or ep.task
                spans = sorted(gold[index], key=lambda s: (s.start, s.end))
                return list(
                    await asyncio.gather(*(one(frames, s, task, ep.timestamps) for s in spans))
                )

        order = sorted(gold)
        labels = await asyncio.gather(*(episode(i) for i in order))
    return dict(zip(order, labels, strict=True))
