"""The body of one annotation job: one module over one shard of episodes.

For every episode of the shard the job either restores the module's rows from the
cache (same prompts, settings, model, data and upstream rows) or runs the module
against the model. Episodes run concurrently so the model server sees many calls in
flight; each finished episode is cached and staged at once, so an interrupted job
loses only the episodes it was working on. The model server is only started when at
least one episode needs it: a job made entirely of cache hits starts nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from episcribe.atomic import write_text
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.modules import registry
from episcribe.modules.base import EpisodeContext, FrameSource
from episcribe.modules.prompts import PromptSet, prompt_files
from episcribe.pipeline.cache import EpisodeCache, digest, record_delivery
from episcribe.pipeline.call_answers import AnswerMemory, answers_dir
from episcribe.pipeline.job_stop import run_until_stopped
from episcribe.pipeline.outcomes import JobSummary, check_failures
from episcribe.pipeline.staging import read_rows, staging_file
from episcribe.vlm import server

log = logging.getLogger(__name__)


@dataclass
class JobSpec:
    """Everything a job needs, as handed over by the Snakemake rule."""

    module: str
    dataset_root: Path
    episodes: list[int]
    staging_dir: Path
    cache_dir: Path
    prompts_dir: Path
    settings: dict  # the module's config section
    model: dict  # the settings that shape the model's answers (vlm.identity.model_identity)
    seed: int
    vlm: dict  # the whole vlm section: backend, endpoint, concurrency, timeouts
    run_dir: Path  # where the model server's state lives
    upstream_modules: list[str] = field(default_factory=list)
    episode_concurrency: int = 8
    metrics_path: Path | None = None
    summary_path: Path | None = None


def run_job(spec: JobSpec) -> JobSummary:
    started = time.monotonic()
    server.exit_when_owner_dies()
    if spec.metrics_path is not None:
        # The metrics describe this job's calls only (a re-run must not double count).
        spec.metrics_path.unlink(missing_ok=True)
    dataset = LeRobotDataset.open(spec.dataset_root, spec.episodes)
    prompts = PromptSet(spec.prompts_dir)
    cache = EpisodeCache(spec.cache_dir, spec.module, _job_identity(spec))
    summary = JobSummary(module=spec.module)
    if spec.summary_path is not None:
        spec.summary_path.unlink(missing_ok=True)

    pending: list[tuple[int, str, dict]] = []
    for index in spec.episodes:
        upstream = {
            dep: read_rows(staging_file(spec.staging_dir, index, dep))
            for dep in spec.upstream_modules
        }
        key = cache.key(dataset.episode_fingerprint(index), upstream)
        rows = cache.get(key)
        if rows is None:
            pending.append((index, key, upstream))
            continue
        cache.deliver(key, rows, spec.staging_dir, index)
        record_delivery(spec.cache_dir, spec.module, index, failed_calls=0, skipped=0)
        summary.cached += 1
        summary.rows += len(rows)
        log.info("episode %06d: %d rows restored from cache", index, len(rows))

    if pending and not registry.asks_model(spec.module):
        run_until_stopped(_run_episodes(spec, dataset, prompts, cache, pending, summary, None))
    elif pending:
        run_until_stopped(_annotate(spec, dataset, prompts, cache, pending, summary))
    summary.seconds = time.monotonic() - started
    log.info(
        "%s: %d episodes annotated, %d from cache, %d incomplete; %d rows, %d skipped "
        "answers; %d model calls, %d failed; %.1f s",
        spec.module,
        summary.annotated,
        summary.cached,
        len(summary.incomplete),
        summary.rows,
        summary.skipped,
        summary.calls,
        summary.failures,
        summary.seconds,
    )
    if spec.summary_path is not None:
        summary.save(spec.summary_path)
    if spec.metrics_path is not None and not spec.metrics_path.exists():
        write_text(spec.metrics_path, "")  # a declared output: no call made, no line
    check_failures(summary, spec.vlm["max_failed_call_share"])
    return summary


def _job_identity(spec: JobSpec) -> str:
    prompt_texts = {
        path.name: path.read_text(encoding="utf-8")
        for path in prompt_files(spec.prompts_dir, spec.module)
    }
    return digest(
        {
            "module": spec.module,
            "version": registry.MODULES[spec.module].version,
            "prompts": prompt_texts,
            "settings": spec.settings,
            "model": spec.model,
            "seed": spec.seed,
        }
    )


async def _annotate(spec, dataset, prompts, cache, pending, summary: JobSummary) -> None:
    # The server (when this job is the first to need it) comes up in its own processes
    # while this one imports the client, instead of one after the other.
    # Awaited, not waited on: a stop signal is handled while the server starts.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="server") as starter:
        server_urls = starter.submit(server.ensure, spec.vlm, spec.run_dir)
        # Imported here: the openai client is slow to import, which a job
        # whose episodes all come from the cache need not pay.
        from episcribe.vlm.client import VlmClient
        from episcribe.vlm.slots import SlotPool

        urls = await asyncio.wrap_future(server_urls)
    # Decoding and JPEG encoding (asyncio.to_thread) run on one worker thread, first come
    # first served: the episodes started first get their frames first and start calling
    # the model, instead of every episode of the job (and of the jobs beside it) decoding
    # at once and the first call waiting for all of them.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="frames")
    )
    slots = SlotPool(spec.run_dir, spec.vlm["client_concurrency"])
    async with VlmClient.for_run(
        urls,
        spec.vlm,
        registry.call_budgets(spec.module, spec.vlm),
        budget_keys=registry.MODULES[spec.module].budget_keys,
        metrics_path=spec.metrics_path,
        slots=slots,
    ) as client:
        await _run_episodes(spec, dataset, prompts, cache, pending, summary, client)


async def _run_episodes(spec, dataset, prompts, cache, pending, summary, client) -> None:
    """Run the module on each pending episode, caching and staging each as it finishes
    (``client`` is None for a module that asks no model)."""
    limit = asyncio.Semaphore(spec.episode_concurrency)
    run_episode = registry.run_episode(spec.module)

    async def one(index: int, key: str, upstream: dict) -> None:
        async with limit:
            t0 = time.monotonic()
            episode = await asyncio.to_thread(dataset.load_episode, index)
            vlm = dict(spec.vlm, camera_key=spec.model.get("camera_key"))
            memory = None
            if client is not None:
                where = answers_dir(spec.cache_dir, spec.module, index)
                memory = AnswerMemory(client, where, cache.identity)
            ctx = EpisodeContext(
                dataset=dataset,
                episode=episode,
                client=memory or client,
                prompts=prompts,
                settings=spec.settings,
                vlm=vlm,
                seed=spec.seed,
                upstream=upstream,
                frames=FrameSource(dataset, episode, vlm),
            )
            rows = await run_episode(ctx)
            if not ctx.failed_calls:
                cache.put(key, rows)
                if memory is not None:
                    memory.forget()
            else:
                summary.incomplete.append(index)
            cache.deliver(key, rows, spec.staging_dir, index)
            record_delivery(
                spec.cache_dir,
                spec.module,
                index,
                failed_calls=ctx.failed_calls,
                skipped=ctx.skipped,
            )
            summary.annotated += 1
            summary.rows += len(rows)
            summary.skipped += ctx.skipped
            log.info(
                "episode %06d: %d rows, %d skipped answers, %d failed calls, %d answers of "
                "an earlier incomplete run reused%s, %.1f s",
                index,
                len(rows),
                ctx.skipped,
                ctx.failed_calls,
                memory.reused if memory is not None else 0,
                " (incomplete: not cached, asked again next run)" if ctx.failed_calls else "",
                time.monotonic() - t0,
            )

    # Let every episode finish (and be cached) before reporting the first failure.
    outcomes = await asyncio.gather(*(one(*item) for item in pending), return_exceptions=True)
    summary.incomplete.sort()
    if client is not None:
        summary.calls = client.stats.calls
        summary.failures = client.stats.failures
        summary.truncated = client.stats.truncated
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
