"""Measure the model-server plumbing: ensure() overhead and how busy the client keeps a server.

    python bench/bench_client.py [--calls 160] [--concurrency 16] [--latency-ms 300]

Starts the fake server through episcribe.vlm.server (backend fake, max_concurrency =
concurrency) in a temporary run dir, then prints:
- ensure() on the already-running server: in-process and through the CLI;
- the client's achieved mean in-flight requests (sum of server-side request times over
  the wall time, from the fake server's request log), the peak, and the wall time next to
  the ideal calls x latency / concurrency.
Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from episcribe.config import resolve
from episcribe.vlm import server
from episcribe.vlm.client import VlmClient, user_message
from episcribe.vlm.slots import SlotPool

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


async def drive(urls: list[str], cfg: dict, run_dir: Path, args) -> float:
    slots = SlotPool(run_dir, args.concurrency)
    async with VlmClient(
        urls, cfg["model_id"], "EMPTY", concurrency=args.concurrency, slots=slots
    ) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                client.complete_json("derive_task", [user_message(f"call {i}")], SCHEMA)
                for i in range(args.calls)
            )
        )
        wall = time.perf_counter() - t0
    failed = sum(r is None for r in results)
    print(f"client: {args.calls} calls, {failed} failed, stats {client.stats}")
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
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="episcribe-bench-") as tmp:
        run_dir = Path(tmp) / "run"
        cfg = settings(args)
        t0 = time.perf_counter()
        urls = server.ensure(cfg, run_dir)
        print(f"fake server cold start via ensure(): {time.perf_counter() - t0:.2f} s")
        try:
            bench_ensure(cfg, run_dir)
            wall = asyncio.run(drive(urls, cfg, run_dir, args))
            mean, peak, span = in_flight(run_dir / "fake_requests_0.jsonl", args.calls)
            ideal = args.calls * args.latency_ms / 1000 / args.concurrency
            print(
                f"in flight at the server: mean {mean:.2f}, peak {peak} "
                f"(bound {args.concurrency}); server busy span {span:.2f} s"
            )
            print(f"client wall {wall:.2f} s vs ideal {ideal:.2f} s ({wall / ideal:.3f}x)")
        finally:
            server.stop(run_dir)


if __name__ == "__main__":
    main()
