"""The synthetic robot: an SO-101-like arm scripted to reach, grasp, carry, release, rest.

``signal_script`` gives an episode's ``observation.state`` (``shoulder_pan.pos ...
gripper.pos``) and the events it holds, the ground truth the signals module's tests check
keystates against; ``draw_robot`` draws the same script into the video (a claw and the
block it carries), so frames and state tell one story.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

STATE_NAMES = [
    f"{joint}.pos"
    for joint in (
        "shoulder_pan",
        "shoulder_lift",
        "elbow_flex",
        "wrist_flex",
        "wrist_roll",
        "gripper",
    )
]
GRIPPER_OPEN, GRIPPER_CLOSED = 35.0, 8.0  # gripper.pos, SO-101 style: 0 is fully closed
GRIPPER_SECONDS = 0.4  # how long a closing or an opening takes
REST_SHARE = 0.05  # the scripted arm is at rest below this share of its peak speed


def seeded_rng(seed: int, *parts) -> np.random.Generator:
    """A generator fixed by (seed, parts): the same dataset on every machine."""
    key = zlib.crc32(repr((seed, *parts)).encode())
    return np.random.default_rng(key)


@dataclass(frozen=True)
class SignalScript:
    """One episode's scripted robot: its state per frame and the events it shows."""

    state: np.ndarray  # frames x len(STATE_NAMES), float32
    events: tuple[tuple[str, int], ...]  # (grasp | release | rest, frame), in time order


def _min_jerk(tau: np.ndarray) -> np.ndarray:
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10 - 15 * tau + 6 * tau**2)


def signal_script(ep: int, n_frames: int, fps: float, seed: int = 0) -> SignalScript:
    """Rest, reach (from 10 %), grasp at ~40 %, carry, release at ~70 %, return, rest from
    ~85 % (the arm at rest there): joint moves are minimum-jerk, the gripper opens and closes on a
    cosine ramp of ``GRIPPER_SECONDS`` centred on its event. Small per-episode shifts."""
    rng = seeded_rng(seed, "script", ep)
    duration = n_frames / fps
    t = np.arange(n_frames) / fps
    grasp, release, stop = (np.array([0.4, 0.7, 0.85]) + rng.uniform(-0.03, 0.03, 3)) * duration
    home = rng.uniform(-10, 10, 5)
    pick = home + rng.choice([-1, 1], 5) * rng.uniform(15, 35, 5)
    place = pick + rng.choice([-1, 1], 5) * rng.uniform(15, 35, 5)
    start, blend = 0.1 * duration, 0.08 * duration
    # Overlapping moves: the arm passes the pick and place spots without stopping.
    moves = ((start, grasp + blend, pick - home), (grasp - blend, release + blend, place - pick),
             (release - blend, stop, home - place))  # fmt: skip
    joints = home + sum(np.outer(_min_jerk((t - a) / (b - a)), d) for a, b, d in moves)

    def ramp(centre: float) -> np.ndarray:  # 0 before, 1 after, cosine in between
        tau = np.clip((t - centre) / GRIPPER_SECONDS + 0.5, 0.0, 1.0)
        return 0.5 - 0.5 * np.cos(np.pi * tau)

    gripper = GRIPPER_OPEN - (GRIPPER_OPEN - GRIPPER_CLOSED) * (ramp(grasp) - ramp(release))
    state = np.column_stack([joints, gripper]) + rng.normal(0, 0.02, (n_frames, len(STATE_NAMES)))
    # At rest: from the frame where the noise-free joint speed stays under 5 % of its peak
    # (a minimum-jerk move creeps for a while before its nominal end).
    speed = np.linalg.norm(np.gradient(joints, axis=0), axis=1)
    at_rest = int(np.nonzero(speed >= REST_SHARE * speed.max())[0][-1]) + 1
    frames = [int(round(grasp * fps)), int(round(release * fps)), at_rest]
    return SignalScript(
        state=state.astype(np.float32),
        events=tuple(zip(("grasp", "release", "rest"), frames, strict=True)),
    )


def draw_robot(img: np.ndarray, script: SignalScript, frame: int, floor: int) -> None:
    """The claw where the arm is (pan -> x, lift -> y), jaws as open as gripper.pos, and
    the block it picks up: at the pick spot, in the claw, then at the place spot. Nothing
    is drawn on the bottom ``floor`` rows (the frame code strip)."""
    h, w = img.shape[:2]
    grasp, release = (f for kind, f in script.events if kind != "rest")

    def spot(f: int) -> tuple[int, int]:
        pan, lift = script.state[min(f, len(script.state) - 1), :2]
        return int(w * (0.5 + pan / 240)), int(h * (0.5 + lift / 320))

    cx, cy = spot(frame)
    gap = int(w * 0.1 * script.state[frame, -1] / GRIPPER_OPEN)
    block = max(2, int(w * 0.035))
    bx, by = spot(grasp) if frame < grasp else (cx, cy) if frame < release else spot(release)
    _box(img, floor, bx - block, by - block, bx + block, by + block, (128, 128, 128))
    jaw = max(1, w // 80)
    _box(img, floor, cx - gap - jaw, cy - 3 * block, cx + gap + jaw, cy - 2 * block, (20, 20, 20))
    for x in (cx - gap - jaw, cx + gap):
        _box(img, floor, x, cy - 2 * block, x + jaw, cy + block, (20, 20, 20))


def _box(img: np.ndarray, floor: int, x0: int, y0: int, x1: int, y1: int, colour) -> None:
    h, w = img.shape[:2]
    y0, y1 = np.clip([y0, y1], 0, h - floor)
    x0, x1 = np.clip([x0, x1], 0, w)
    img[y0:y1, x0:x1] = colour
