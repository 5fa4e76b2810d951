"""Measure `episcribe review`: the list page of a 1,000-episode run, and one correction's
round trip from the key press to the file on disk.

    python bench/bench_review.py [--episodes 1000] [--repeat 5] [--workdir DIR]

Builds (not timed; kept in --workdir) a synthetic dataset of --episodes 2-s episodes
(one 64x48 H.264 camera) and a results directory for it: each episode's staging files
as a run writes them (signals keystates; plan subtasks, plans, memory, task rephrasings;
interjections with their replies; plan_update; VQA pairs), and the validation report.
Then starts the real server process (`episcribe review`) and drives Debian's Chromium
with Playwright:
- the list page: navigation until every episode's row is drawn (the /api/episodes
  answer included), the first time (the server parses every plan file) and --repeat
  times after (it parses only changed files), and the /api/episodes answer alone;
- a correction: on an episode page, a label typed and Enter pressed, until the review
  file on disk holds it (the page's PUT, the validation of the episode, the atomic
  writes of the review, its state and gold.jsonl), --repeat times on different episodes.
Prints the median and the range; the load average is printed beside them (the machine
is shared). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synth import make_dataset  # noqa: E402
from test_review_browser import CHROMIUM_ARGS  # noqa: E402

from episcribe.atomic import write_json  # noqa: E402
from episcribe.lerobot import language as L  # noqa: E402
from episcribe.lerobot.dataset import LeRobotDataset  # noqa: E402
from episcribe.pipeline.staging import review_file, staging_file, write_rows  # noqa: E402

CAMERA = "observation.images.top"


def build(workdir: Path, episodes: int) -> Path:
    """The dataset and a run's results for it, under workdir (reused when present)."""
    root = workdir / f"ds{episodes}"
    results = workdir / "results" / root.name
    if (results / "validation" / "report.json").exists():
        return results
    if not root.exists():
        make_dataset(
            root, episodes=episodes, seconds=2.0, fps=10, cameras=(CAMERA,),
            episodes_per_file=100, size=(64, 48),
        )  # fmt: skip
    ds = LeRobotDataset.open(root)
    staging = results / "staging"
    for index in ds.episode_indices():
        t = [float(x) for x in ds.load_episode(index).timestamps]
        starts = [t[0], t[5], t[10], t[15]]
        keystate = '{"arm": "left", "kind": "grasp", "part": "gripper"}'
        write_rows(
            staging_file(staging, index, "signals"),
            [L.make_row("assistant", keystate, "keystate", t[5])],
        )
        plan = [L.make_row("user", f"task phrasing {k}", "task_aug", t[0]) for k in range(10)]
        for k, s in enumerate(starts):
            plan.append(L.make_row("assistant", f"subtask {k} of episode {index}", "subtask", s))
            plan.append(L.make_row("assistant", f"plan from step {k}", "plan", s))
            if k:
                plan.append(L.make_row("assistant", f"memory after {k}", "memory", s))
        write_rows(staging_file(staging, index, "plan"), plan)
        write_rows(
            staging_file(staging, index, "interjections"),
            [
                L.speech_atom("On it.", t[0]),
                L.make_row("user", "Do the other one first.", "interjection", t[10]),
                L.speech_atom("Sure, the other one first.", t[10]),
            ],
        )
        write_rows(
            staging_file(staging, index, "plan_update"),
            [L.make_row("assistant", "the other one, then the rest", "plan", t[10])],
        )
        write_rows(
            staging_file(staging, index, "vqa"),
            [
                row
                for tick in (t[2], t[12])
                for row in (
                    L.make_row("user", "How many cubes?", "vqa", tick, CAMERA),
                    L.make_row("assistant", '{"label": "cube", "count": 1}', "vqa", tick, CAMERA),
                )
            ],
        )
    write_json(results / "validation" / "report.json", {"dataset_root": str(root.resolve())})
    return results


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values) * 1000:.0f} ms "
        f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}, n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bench_review"
    )
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    results = build(args.workdir, args.episodes)
    print(f"results directory: {results} (built in {time.monotonic() - started:.1f} s)")
    server = subprocess.Popen(
        [sys.executable, "-c", "from episcribe.command.cli import main; exit(main())"]
        + ["review", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in server.stdout:
            found = re.search(r"(http://\S+)/\?token=(\S+)", line)
            if found:
                base, token = found.groups()
                break
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(f"{base}/?token={token}")
            page.wait_for_selector("body[data-loaded]")
            first = time.perf_counter() - t0
            listed = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                page.goto(f"{base}/")
                page.wait_for_selector("body[data-loaded]")
                listed.append(time.perf_counter() - t0)
            rows = page.locator("#episodes tr").count()
            trips = []
            for episode in range(args.repeat):
                page.goto(f"{base}/episode/{episode}")
                page.wait_for_selector("body[data-loaded]")
                page.click(".bar[data-i='1']")
                label = f"corrected label {time.time_ns()}"
                page.fill("#label-input", label)
                path = review_file(results / "review", episode)
                t0 = time.perf_counter()
                page.press("#label-input", "Enter")
                while not (path.exists() and label in path.read_text()):
                    time.sleep(0.002)
                trips.append(time.perf_counter() - t0)
            browser.close()
        api = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with urllib.request.urlopen(f"{base}/api/episodes?token={token}") as answer:
                answer.read()
            api.append(time.perf_counter() - t0)
    finally:
        server.terminate()
        server.communicate(timeout=30)
    load = "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"list page, {rows} episodes, in Chromium: first load {first * 1000:.0f} ms (every")
    print(f"  staging file parsed), then {spread(listed)}; {load}")
    print(f"GET /api/episodes ({args.episodes} episodes): {spread(api)}")
    print(f"one correction, Enter to file on disk: {spread(trips)}; {load}")


if __name__ == "__main__":
    main()
