"""The issue-6 scenario through the real workflow: is the model server kept busy?

    python bench/bench_workflow.py [--episodes 32] [--seconds 20] [--fps 30] [--size 320x240]
        [--latency-ms 300] [--max-concurrency 16] [--client-concurrency 16] [--cores 2]
        [--repeat 1] [--zero-latency | --no-zero-latency] [--workdir DIR] [--keep]
        [--config KEY=VALUE ...]

Builds (once, outside the timing) a synthetic dataset of 32 episodes x 20 s x 2 cameras,
320x240 H.264 at 30 fps, then runs `snakemake --cores 2` on it in a throw-away copy of the
workflow with the fake model server (`vlm.backend: fake`, `vlm.fake.latency_ms`,
`vlm.fake.max_concurrency`, `vlm.client_concurrency`). Every run starts from an empty
workspace (no cache, no staging). Prints, per run:

- model calls (from the fake server's request log) and the wall time of the whole
  `snakemake` invocation next to the bound calls x latency / max_concurrency;
- mean calls in flight at the server (start..end of each call, i.e. after queueing) over
  the whole run and over the server's busy time (the union of call intervals), and the
  server's idle share (the run's wall time with no call in flight);
- peak memory: RSS summed over snakemake and all its descendants (jobs, their threads'
  memory, and the fake server, which is found by its command line because it runs in its
  own session), polled every 0.2 s. A sum of RSS counts shared library pages once per
  process, so it overstates what the machine actually used.

Then (unless --no-zero-latency) the same dataset with a zero-latency fake server: wall
time per episode, i.e. what the workflow itself costs (decode, encode, HTTP, jobs,
Snakemake). Prints numbers, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scenario import scenario_from_args  # noqa: E402
from smk import RULE_LINE, Workspace, _clean_env  # noqa: E402

POLL_S = 0.2


class MemoryPoller(threading.Thread):
    """Peak RSS sum of a process tree (plus processes whose command line names ``marker``)."""

    def __init__(self, pid: int, marker: str):
        super().__init__(daemon=True)
        self.pid, self.marker = pid, marker
        self.peak = 0
        self.peak_procs = 0
        self.samples = 0
        self.stop_event = threading.Event()

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            procs = {p.pid: p for p in [root, *root.children(recursive=True)]}
        except psutil.NoSuchProcess:
            procs = {}
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(self.marker in part for part in p.info["cmdline"] or []):
                    procs.setdefault(p.pid, p)
                    for c in p.children(recursive=True):
                        procs.setdefault(c.pid, c)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return list(procs.values())

    def run(self) -> None:
        while not self.stop_event.is_set():
            total = 0
            procs = self.tree()
            for p in procs:
                try:
                    total += p.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.samples += 1
            if total > self.peak:
                self.peak, self.peak_procs = total, len(procs)
            self.stop_event.wait(POLL_S)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


def server_stats(calls: list[dict], t0: float, t1: float) -> dict:
    """In-flight statistics of the fake server's request log over the run [t0, t1]."""
    spans = sorted((c["start"], c["end"]) for c in calls if "start" in c and "end" in c)
    service = sum(e - s for s, e in spans)
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    wall = t1 - t0
    waits = [c["start"] - c["arrival"] for c in calls if "start" in c and "arrival" in c]
    return {
        "calls": len(calls),
        "failed": sum(1 for c in calls if c.get("status") not in (0, 200, None)),
        "first_call_s": spans[0][0] - t0 if spans else None,
        "last_call_end_s": t1 - spans[-1][1] if spans else None,
        "mean_in_flight_run": service / wall if wall else 0.0,
        "mean_in_flight_busy": service / busy if busy else 0.0,
        "idle_share": 1 - busy / wall if wall else 1.0,
        "mean_queue_wait_s": statistics.mean(waits) if waits else 0.0,
        "kinds": _count(c.get("kind") for c in calls),
    }


def _count(items) -> dict:
    out: dict = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))


def one_run(dataset: Path, workdir: Path, args, latency_ms: int, label: str) -> dict:
    config = {
        "vlm__fake__latency_ms": latency_ms,
        "vlm__fake__max_concurrency": args.max_concurrency,
        "vlm__client_concurrency": args.client_concurrency,
    }
    for item in args.config:
        key, _, value = item.partition("=")
        config[key.replace(".", "__")] = value
    ws = Workspace(workdir, dataset, **config)
    command = ws.command(*args.snakemake_args)
    command[command.index("--cores") + 1] = str(args.cores)
    log_path = workdir / "snakemake.out"
    with open(log_path, "w") as out:
        t0 = time.time()
        proc = subprocess.Popen(
            command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=_clean_env()
        )
        poller = MemoryPoller(proc.pid, str(ws.server_dir))
        poller.start()
        rc = proc.wait()
        t1 = time.time()
        poller.stop()
    wall = t1 - t0
    calls = ws.fake_requests()
    stats = server_stats(calls, t0, t1)
    jobs = len(RULE_LINE.findall(log_path.read_text()))
    result = {
        "label": label,
        "rc": rc,
        "wall_s": wall,
        "latency_ms": latency_ms,
        "jobs": jobs,
        "peak_rss_mb": poller.peak / 2**20,
        "peak_procs": poller.peak_procs,
        **stats,
    }
    if rc != 0:
        print(f"  snakemake failed (rc {rc}); see {log_path}", file=sys.stderr)
        print(log_path.read_text()[-3000:], file=sys.stderr)
    return result


def report(r: dict, args) -> None:
    print(f"-- {r['label']}: rc {r['rc']}, {r['jobs']} jobs")
    if r["latency_ms"] and r["calls"]:
        bound = r["calls"] * r["latency_ms"] / 1000 / args.max_concurrency
        print(
            f"  wall {r['wall_s']:.1f} s; {r['calls']} calls; bound calls x latency / "
            f"{args.max_concurrency} = {bound:.1f} s; ratio {r['wall_s'] / bound:.2f} "
            f"(target <= 1.1, i.e. <= {1.1 * bound:.1f} s)"
        )
        print(
            f"  mean in flight: {r['mean_in_flight_run']:.1f} over the run, "
            f"{r['mean_in_flight_busy']:.1f} over busy time; server idle "
            f"{100 * r['idle_share']:.0f}% of the run; first call {r['first_call_s']:.1f} s "
            f"after start, last call ended {r['last_call_end_s']:.1f} s before the end; "
            f"mean queue wait at the server {r['mean_queue_wait_s'] * 1000:.0f} ms"
        )
    else:
        per = r["wall_s"] / args.episodes
        print(
            f"  wall {r['wall_s']:.1f} s; {r['calls']} calls; {per:.2f} s per "
            f"{args.seconds:g}-s episode (target <= 0.4)"
        )
    print(
        f"  peak memory (RSS sum of {r['peak_procs']} processes): {r['peak_rss_mb']:.0f} MB "
        "(target <= 1024)"
    )
    print(f"  calls by kind: {r['kinds']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[1:]),
    )
    parser.add_argument("--episodes", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per episode")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="320x240", help="frame size WxH")
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--max-concurrency", type=int, default=16, help="fake server's cap")
    parser.add_argument("--client-concurrency", type=int, default=16)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario")
    parser.add_argument(
        "--zero-latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run with a zero-latency server (workflow overhead per episode)",
    )
    parser.add_argument(
        "--latency-run",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the --latency-ms scenario",
    )
    parser.add_argument(
        "--config",
        nargs="*",
        default=[],
        help="extra workflow config, e.g. workflow.episodes_per_job=4",
    )
    parser.add_argument("--snakemake-args", nargs="*", default=[], help="extra snakemake arguments")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where datasets and runs go (default: tmp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_workflow_")
        args.workdir = Path(tmp.name)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    dataset = scenario_from_args(args.workdir, args)
    print(
        f"{args.episodes} episodes x {args.seconds:g} s x {args.cameras} cameras, "
        f"{args.size} H.264 at {args.fps} fps; --cores {args.cores}; load average "
        f"{' '.join(f'{x:.1f}' for x in psutil.getloadavg())}"
    )

    results = []
    plans = []
    if args.latency_run:
        plans.append((args.latency_ms, f"latency {args.latency_ms} ms"))
    if args.zero_latency:
        plans.append((0, "zero latency"))
    for latency, label in plans:
        for k in range(args.repeat):
            run_dir = args.workdir / f"run_{latency}ms_{k}_{time.time_ns()}"
            r = one_run(dataset, run_dir, args, latency, f"{label}, run {k + 1}/{args.repeat}")
            r["load_avg_after"] = psutil.getloadavg()
            report(r, args)
            results.append(r)
            if not args.keep:
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
    for latency, label in plans:
        walls = [r["wall_s"] for r in results if r["latency_ms"] == latency]
        if len(walls) > 1:
            print(f"{label}: wall {min(walls):.1f}-{max(walls):.1f} s over {len(walls)} runs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str))
    if tmp is not None and not args.keep:
        tmp.cleanup()


if __name__ == "__main__":
    main()
