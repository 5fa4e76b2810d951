"""Frame decoding throughput, and what seeking saves on long concatenated video files.

Prints numbers, asserts nothing:
  1. frames/s decoding every frame of every episode of g1_bottle (AV1) via decode_frames;
  2. the same on a synthetic H.264 dataset;
  3. time to fetch 10 frames of the LAST episode of one long synthetic file
     (default 40 episodes x 30 s, 320x240, 30 fps) by seeking (decode_frames) versus
     decoding from the start of the file.

    python bench/bench_decode.py [--g1 PATH] [--episodes 40] [--seconds 30] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.frames import decode_frames

# The synthetic dataset factory lives with the tests (it ships in no package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synth import make_dataset  # noqa: E402

G1 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "g1_bottle"


def all_frames_rate(root: Path) -> tuple[int, float]:
    ds = LeRobotDataset.open(root)
    frames = 0
    start = time.perf_counter()
    for i in ds.episode_indices():
        ep = ds.load_episode(i)
        for cam in ds.cameras:
            frames += len(decode_frames(ep.info.videos[cam], ep.timestamps))
    return frames, time.perf_counter() - start


def from_start(path: Path, targets: list[float]) -> float:
    """Decode from the first frame until past the last target (the no-seek baseline)."""
    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last = max(targets)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > last:
                break
            if any(abs(frame.time - t) < 1e-3 for t in targets):
                frame.to_image()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g1", type=Path, default=G1, help="the real AV1 dataset (g1_bottle)")
    parser.add_argument("--episodes", type=int, default=40, help="episodes in the long file")
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per episode")
    parser.add_argument("--workdir", type=Path, help="where to build synthetic data (default: tmp)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        if args.g1.exists():
            n, secs = all_frames_rate(args.g1)
            print(f"g1_bottle AV1 640x480, all frames: {n} in {secs:.2f} s = {n / secs:.0f} fps")
        else:
            print(f"g1_bottle not found at {args.g1}; skipped")

        root = make_dataset(tmp / "h264", episodes=6, seconds=20.0, fps=30, size=(320, 240))
        n, secs = all_frames_rate(root)
        print(
            f"synthetic H.264 320x240, all frames: {n} frames in {secs:.2f} s = {n / secs:.0f} fps"
        )

        t0 = time.perf_counter()
        long = make_dataset(
            tmp / "long",
            episodes=args.episodes,
            episodes_per_file=args.episodes,
            seconds=args.seconds,
            fps=30,
            size=(320, 240),
            cameras=("observation.images.top",),
        )
        print(
            f"built a {args.episodes} x {args.seconds:g} s H.264 file (320x240, 30 fps) "
            f"in {time.perf_counter() - t0:.1f} s"
        )
        ds = LeRobotDataset.open(long)
        ep = ds.load_episode(ds.episode_indices()[-1])
        seg = ep.info.videos["observation.images.top"]
        picks = ep.timestamps[np.linspace(0, len(ep.timestamps) - 1, 10).astype(int)]
        seek = []
        for _ in range(3):
            start = time.perf_counter()
            decode_frames(seg, picks)
            seek.append(time.perf_counter() - start)
        linear = from_start(seg.path, [seg.from_timestamp + float(t) for t in picks])
        print(
            f"10 frames of the last episode (starts at {seg.from_timestamp:.0f} s): "
            f"seek {min(seek) * 1000:.0f} ms (best of 3), from file start {linear * 1000:.0f} ms "
            f"({linear / min(seek):.1f}x)"
        )


if __name__ == "__main__":
    main()
