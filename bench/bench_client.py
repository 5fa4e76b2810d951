"""Measure the model-server plumbing: ensure() overhead and how busy the client keeps a server.

    python bench/bench_client.py [--calls 160] [--concurrency 16] [--latency-ms 300]

Starts the fake server through episcribe.vlm.server (backend fake, max_concurrency =
concurrency) in a temporary run dir, then prints:
- ensure() on the already-running server: in-process and through the CLI;
- the client's achieved mean in-flight requests (sum of server-side request times over
  the wall time, from the fake server's request log), the peak, and the wall time next to
  the ideal calls x latency / concurrency;
- CPU per call (user + sys): the client process (request building, HTTP, JSON and schema
  checks, metrics; the image is encoded once, outside the timing) and the fake server's
  replica process (HTTP, request checks, answer). ``--kind vqa_bbox`` (default) sends the
  real VQA prompt and schema with one 320x240 JPEG, like a VQA call; ``--kind
  derive_task`` a short text-only call. Use ``--latency-ms 0`` for CPU alone.
Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from PIL import Image

from episcribe.config import resolve
from episcribe.lerobot.frames import jpeg_data_url
from episcribe.modules.prompts import PromptSet
from episcribe.vlm import server
from episcribe.vlm.client import VlmClient, user_message
from episcribe.vlm.slots import SlotPool

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"

SCHEMA = {
    "type": "object",
    "properties": {"task": {"type": "string"}},
    "required": ["task"],
    "additionalProperties": False,
}


def settings(args) -> dict:
    """The vlm config section with the schema's defaults, for a fake server."""
    vlm = {
        "backend": "fake",
        "model_id": "bench/model",
        "api_base": "http://127.0.0.1:9/v1",  # nothing listens: the fake server is started
        "startup_timeout_s": 60,
        "fake": {"latency_ms": args.latency_ms, "max_concurrency": args.concurrency},
    }
    return resolve({"vlm": vlm})["vlm"]


def bench_ensure(cfg: dict, run_dir: Path, repeat: int = 200, cli_repeat: int = 10) -> None:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        server.ensure(cfg, run_dir)
        times.append(time.perf_counter() - t0)
    print(
        f"ensure() in-process, server running: median {statistics.median(times) * 1e3:.2f} ms, "
        f"p90 {sorted(times)[int(0.9 * repeat)] * 1e3:.2f} ms ({repeat} calls)"
    )
    cmd = [sys.executable, "-m", "episcribe.vlm.server", "ensure", "--run-dir", str(run_dir)]
    cmd += ["--settings-json", json.dumps(cfg)]
    times = []
    for _ in range(cli_repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    print(
        f"ensure via CLI (python -m episcribe.vlm.server ensure): median "
        f"{statistics.median(times):.3f} s ({cli_repeat} runs, includes Python start-up)"
    )


def requests(args) -> tuple[list[list[dict]], dict]:
    """The messages of each call and the answer schema."""
    if args.kind == "derive_task":
        return [[user_message(f"call {i}")] for i in range(args.calls)], SCHEMA
    prompt = PromptSet(PROMPTS).get(args.kind)
    # A frame-like image: a gradient with a little noise, ~7.6 KB of JPEG (the synthetic
    # benchmark dataset's frames are ~4.4 KB, camera frames of this size ~10-15 KB).
    gradient = Image.linear_gradient("L").resize((320, 240)).convert("RGB")
    image = Image.blend(gradient, Image.effect_noise((320, 240), 5).convert("RGB"), 0.5)
    url = jpeg_data_url(image)
    print(f"{args.kind} calls with one 320x240 JPEG of {len(url) * 3 // 4 / 1024:.1f} KB")
    coords = "Coordinate system: normalized 0-1000"
    messages = [
        [
            user_message(
                prompt.render(camera="cam", timestamps=f"{i:.3f}", coordinate_system=coords), [url]
            )
        ]
        for i in range(args.calls)
    ]
    return messages, prompt.schema


def replica_processes(run_dir: Path) -> list[psutil.Process]:
    """The fake server's replica processes (children of the recorded supervisor)."""
    state = json.loads((run_dir / "server.json").read_text())
    procs = [psutil.Process(r["pid"]) for r in state.get("replicas", []) if r.get("pid")]
    if not procs:  # no replica pids recorded: the supervisor's whole process tree
        sup = psutil.Process(state["pid"])
        procs = [sup, *sup.children(recursive=True)]
    return procs


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


async def drive(urls: list[str], cfg: dict, run_dir: Path, args) -> float:
    slots = SlotPool(run_dir, args.concurrency)
    messages, schema = requests(args)
    replicas = replica_processes(run_dir)
    async with VlmClient(
        urls, cfg["model_id"], "EMPTY", concurrency=args.concurrency, slots=slots
    ) as client:
        server_cpu0, cpu0 = cpu_seconds(replicas), time.process_time()
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(client.complete_json(args.kind, m, schema) for m in messages)
        )
        wall = time.perf_counter() - t0
        cpu, server_cpu = time.process_time() - cpu0, cpu_seconds(replicas) - server_cpu0
    failed = sum(r is None for r in results)
    print(f"client: {args.calls} {args.kind} calls, {failed} failed, stats {client.stats}")
    print(
        f"CPU per call: client {cpu / args.calls * 1e3:.2f} ms, fake server "
        f"{server_cpu / args.calls * 1e3:.2f} ms (user+sys; load average "
        f"{os.getloadavg()[0]:.1f})"
    )
    return wall


def in_flight(log_path: Path, calls: int) -> tuple[float, int, float]:
    entries = [json.loads(line) for line in log_path.read_text().splitlines()][-calls:]
    first = min(e["arrival"] for e in entries)
    last = max(e["end"] for e in entries)
    busy = sum(e["end"] - e["arrival"] for e in entries)
    events = sorted([(e["arrival"], 1) for e in entries] + [(e["end"], -1) for e in entries])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return busy / (last - first), peak, last - first


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=160)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency-ms", type=float, default=300)
    p.add_argument(
        "--kind", default="vqa_bbox", help="vqa_bbox (or another prompt kind) or derive_task"
    )
    p.add_argument("--skip-ensure", action="store_true", help="skip the ensure() timings")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="episcribe-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        cfg = settings(args)
        t0 = time.perf_counter()
        urls = server.ensure(cfg, run_dir)
        print(f"fake server cold start via ensure(): {time.perf_counter() - t0:.2f} s")
        try:
            if not args.skip_ensure:
                bench_ensure(cfg, run_dir)
            wall = asyncio.run(drive(urls, cfg, run_dir, args))
            mean, peak, span = in_flight(run_dir / "fake_requests_0.jsonl", args.calls)
            ideal = args.calls * args.latency_ms / 1000 / args.concurrency
            print(
                f"in flight at the server: mean {mean:.2f}, peak {peak} "
                f"(bound {args.concurrency}); server busy span {span:.2f} s"
            )
            ratio = f" ({wall / ideal:.3f}x)" if ideal > 0 else ""
            print(f"client wall {wall:.2f} s vs ideal {ideal:.2f} s{ratio}")
        finally:
            server.stop(run_dir)


if __name__ == "__main__":
    main()
