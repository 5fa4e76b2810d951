"""Hub download and upload of g1_bottle through the Hub stand-in, and clip sizes.

Prints numbers, asserts nothing:
  1. download_dataset of g1_bottle from the stand-in (tests/hub_standin.py: olah serving
     a git repo; real huggingface_hub client, real HTTP): seconds, files, bytes; then the
     second call (the cached copy: no request);
  2. push_dataset of that copy to a new repo (Git LFS upload, HF_HUB_DISABLE_XET=1):
     seconds and bytes the stand-in received;
  3. per episode, the plan.use_video_url clip (H.264 mp4 at --fps, longer side <= 768)
     versus the JPEG contact sheets of the default frame mode: frames, bytes, encode time.

    python bench/bench_hub.py [--g1 PATH] [--fps 2.0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
G1 = REPO.parent / "shared" / "datasets" / "g1_bottle"
sys.path.insert(0, str(REPO / "tests"))

from hub_standin import Standin  # noqa: E402

TOKEN = "hf_benchToken"


def hub_numbers(g1: Path, work: Path) -> None:
    hub = Standin(work / "hub", token=TOKEN)
    # huggingface_hub reads these when it is first imported (inside episcribe.lerobot.hub).
    os.environ.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(work / "hf_home"),
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    from episcribe.lerobot import hub as episcribe_hub

    try:
        hub.publish("lerobot/g1_bottle", g1)
        dest = work / "resources" / "lerobot__g1_bottle" / "version-tag"
        start = time.perf_counter()
        episcribe_hub.download_dataset("lerobot/g1_bottle", None, dest)
        took = time.perf_counter() - start
        sent = sum(r["sent"] for r in hub.requests())
        files = [p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.parts]
        size = sum(p.stat().st_size for p in files)
        print(
            f"download: {took:.2f} s, {len(files)} files, {size:,} bytes on disk, "
            f"{sent:,} bytes sent by the stand-in, {len(hub.requests())} requests"
        )
        before = len(hub.requests())
        start = time.perf_counter()
        episcribe_hub.download_dataset("lerobot/g1_bottle", None, dest)
        print(
            f"download again (cached): {time.perf_counter() - start:.3f} s, "
            f"{len(hub.requests()) - before} requests"
        )

        folder = work / "to_push"
        shutil.copytree(dest, folder, ignore=shutil.ignore_patterns(".cache"))
        before = len(hub.requests())
        start = time.perf_counter()
        receipt = episcribe_hub.push_dataset(
            folder, "me/g1_bench", private=False, commit_message="bench", card="# bench\n"
        )
        took = time.perf_counter() - start
        received = sum(r["received"] for r in hub.requests()[before:])
        print(
            f"upload: {took:.2f} s, {receipt['files']} files, {receipt['bytes']:,} bytes, "
            f"{received:,} bytes received by the stand-in, "
            f"{len(hub.requests()) - before} requests"
        )
        print(f"refs of me/g1_bench after the push: {hub.refs('me/g1_bench')}")
    finally:
        hub.stop()


def clip_numbers(g1: Path, fps: float) -> None:
    from episcribe.config import resolve
    from episcribe.lerobot.dataset import LeRobotDataset
    from episcribe.lerobot.frames import burn_label, decode_frames, encode_jpeg, encode_mp4
    from episcribe.modules.plan import sheet_grid
    from episcribe.modules.plan.windows import sampled_times

    ds = LeRobotDataset.open(g1)
    camera = ds.cameras[0]
    plan = resolve({})["plan"]
    grid = sheet_grid(plan)
    print(
        f"clips ({camera}, {fps:g} fps, longer side <= 768) vs contact sheets "
        f"({plan['frames_per_second']:g} fps, {grid.columns} x {grid.rows} tiles):"
    )
    for index in ds.episode_indices():
        ep = ds.load_episode(index)
        segment = ep.info.videos[camera]
        times = sampled_times(ep.timestamps, fps)
        images = decode_frames(segment, times)
        labelled = [burn_label(im, f"{t:.3f}s") for im, t in zip(images, times, strict=True)]
        start = time.perf_counter()
        clip = encode_mp4(labelled, fps, 768)
        encode_s = time.perf_counter() - start
        sheet_times = sampled_times(ep.timestamps, plan["frames_per_second"])
        sheet_images = decode_frames(segment, sheet_times)
        labels = [f"{t:.3f}s" for t in sheet_times]
        sheets = [
            encode_jpeg(sheet, max(sheet.size), grid.quality)
            for sheet in grid.sheets(sheet_images, labels)
        ]
        print(
            f"  episode {index}: {ep.duration:.1f} s; clip {len(times)} frames, "
            f"{len(clip):,} bytes ({len(clip) * 4 // 3:,} as base64), encoded in "
            f"{encode_s:.2f} s; sheets {len(sheets)} JPEGs of {len(sheet_times)} frames, "
            f"{sum(len(s) for s in sheets):,} bytes"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g1", type=Path, default=G1)
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        hub_numbers(args.g1, work)
        clip_numbers(args.g1, args.fps)


if __name__ == "__main__":
    main()
