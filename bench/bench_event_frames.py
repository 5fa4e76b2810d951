"""Which events of an annotated dataset reach LeRobot's training, frame by frame.

Prints numbers, asserts nothing. LeRobot's recipes train one sub-recipe per frame and
route VQA first, so a spoken exchange (the robot's ``say``, with or without an
interjection) on a frame that also carries a VQA pair is never trained, and a frame with
two cameras' VQA pairs needs one VQA binding per camera. For each annotated dataset:
frames with speech, how many of them share their frame with a VQA pair, and frames with
VQA pairs of two or more cameras (read from the written parquet files with
``tests/lerobot_resolvers.frame_routes``, not our validator).

With no directory, annotates g1_bottle with the fake backend first (all modules, the
defaults) in a temporary workspace and counts its output.

    python bench/bench_event_frames.py [ANNOTATED_DIR ...] [--g1 PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
G1 = REPO.parent / "shared" / "datasets" / "g1_bottle"
sys.path.insert(0, str(REPO / "tests"))

from lerobot_resolvers import frame_routes  # noqa: E402


def counts(annotated: Path) -> str:
    routes = frame_routes(annotated)
    speech = [r for r in routes if r["says"]]
    shared = [r for r in speech if r["vqa_rows"]]
    cameras = [r for r in routes if len(set(r["vqa_rows"])) > 1]
    vqa = [r for r in routes if r["vqa_rows"]]
    return (
        f"{annotated}: {len(speech)} frames with speech, {len(shared)} of them sharing a "
        f"frame with a VQA pair (never trained); {len(vqa)} frames with VQA, "
        f"{len(cameras)} of them with pairs of 2+ cameras"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("annotated", nargs="*", type=Path)
    parser.add_argument("--g1", type=Path, default=G1)
    args = parser.parse_args()
    if args.annotated:
        for path in args.annotated:
            print(counts(path))
        return
    from smk import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws", args.g1)
        ws.run()
        print(counts(ws.root / "results" / args.g1.name / "annotated"))


if __name__ == "__main__":
    main()
