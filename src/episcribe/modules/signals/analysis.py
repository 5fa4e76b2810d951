"""The robot's own signals: which channels are which, keystates and motion primitives.

No model is asked anything here. An episode's ``observation.state`` (or another vector
feature) is read frame by frame; its channels are recognised by the feature's ``names``
in ``meta/info.json`` only, never by position:

- gripper/hand channels: a name with gripper, grip, hand, finger or claw in it (a hand's
  fingers are averaged into one opening signal);
- arm joints: shoulder, elbow, wrist, waist, forearm or joint;
- end-effector pose: ee/eef/tcp/end_effector/cartesian with an axis x/y/z (position) or
  roll/pitch/yaw/rx/ry/rz (rotation), in the robot's base frame as recorded.

A left/right word (or an ``l_``/``r_`` prefix) puts a channel on that arm; without one the
robot has one arm, labelled "". Names that identify nothing give no rows and a logged note.

Keystates (NILS-style): ``grasp`` (a gripper closes), ``release`` (it opens), ``rest`` (an
arm comes to rest). Why the thresholds are relative: units differ between robots
(degrees, radians, 0-1, 0-100) and a gripper closed on a bottle stops far from its closed
limit, so every signal is measured against its own range or peak speed in the episode.
A gripper's opening is scaled to 0 (its most closed in the episode) .. 1 (most open);
it is closed below ``gripper_low`` and open above ``gripper_high`` (hysteresis: noise
near one level never toggles it), and the keystate is the frame where it last crosses
the middle on the way. An episode starts open unless its gripper is below
``gripper_low`` at the first frame: demonstrations start empty-handed, and a hand whose
rest pose is half closed must not count its first grasp as an opening. Scaling makes
any wiggle full-scale, so a gripper counts only if its range is at least
``gripper_min_range`` of its largest magnitude (a hand that never acts stays silent).
An arm rests while its smoothed joint speed stays below ``rest_speed`` of its peak (95th
percentile) speed for at least ``rest_min_seconds``; the keystate is where that begins
(not at frame 0: an arm that has not moved yet has not come to rest). An arm whose
joints move less than ``arm_min_range`` (in the data's own unit) has no rest keystates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

GRIPPER_WORDS = frozenset({"gripper", "grip", "hand", "finger", "fingers", "claw"})
ARM_WORDS = frozenset({"shoulder", "elbow", "wrist", "waist", "forearm", "joint"})
EE_WORDS = frozenset({"ee", "eef", "tcp", "effector", "cartesian"})
POSITION_AXES = ("x", "y", "z")
ROTATION_AXES = {"roll": 0, "pitch": 1, "yaw": 2, "rx": 0, "ry": 1, "rz": 2}
SIDES = {"left": "left", "l": "left", "right": "right", "r": "right"}
KINDS = ("grasp", "release", "rest")
# ECoT's base-frame words: +x forward, +y left, +z up.
DIRECTIONS = (("forward", "backward"), ("left", "right"), ("up", "down"))
ROTATION_WORDS = ("roll", "pitch", "yaw")
SECONDARY_AXIS = 0.5  # an axis joins the primitive's words above this share of the main one


def tokens(name: str) -> list[str]:
    """``kLeftHandPinky`` -> [k, left, hand, pinky]; ``wrist_flex.pos`` -> [wrist, flex, pos]."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", str(name))
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def feature_names(info: Mapping, key: str) -> list[str] | None:
    """The channel names of a vector feature (``names`` as a list, a list of one list, or
    a dict of lists, as LeRobot versions wrote it); None when it has none."""
    feature = (info.get("features") or {}).get(key)
    names = feature.get("names") if isinstance(feature, Mapping) else None
    if isinstance(names, Mapping):
        names = next(iter(names.values()), None)
    if isinstance(names, list) and len(names) == 1 and isinstance(names[0], list):
        names = names[0]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return list(names)


@dataclass
class Channels:
    """Channel indices per arm label ("" for a one-armed robot)."""

    grippers: dict[str, list[int]] = field(default_factory=dict)
    arms: dict[str, list[int]] = field(default_factory=dict)
    ee_position: dict[str, list[int]] = field(default_factory=dict)  # x, y, z in order
    ee_rotation: dict[str, list[int]] = field(default_factory=dict)  # roll, pitch, yaw
    gripper_parts: dict[str, str] = field(default_factory=dict)  # arm -> "hand" or "gripper"

    def empty(self) -> bool:
        return not (self.grippers or self.arms or self.ee_position)


def find_channels(names: Sequence[str]) -> Channels:
    """Group the channel names by part and arm (see the module docstring)."""
    found = Channels()
    positions: dict[str, dict[int, int]] = {}
    rotations: dict[str, dict[int, int]] = {}
    for index, name in enumerate(names):
        words = tokens(name)
        side = next((SIDES[w] for w in words if w in SIDES), "")
        present = set(words)
        if present & EE_WORDS or {"end", "effector"} <= present:
            axis = next((POSITION_AXES.index(w) for w in words if w in POSITION_AXES), None)
            if axis is not None:
                positions.setdefault(side, {}).setdefault(axis, index)
                continue
            rot = next((ROTATION_AXES[w] for w in words if w in ROTATION_AXES), None)
            if rot is not None:
                rotations.setdefault(side, {}).setdefault(rot, index)
                continue
        if present & GRIPPER_WORDS:
            found.grippers.setdefault(side, []).append(index)
            if present & {"hand", "finger", "fingers"}:
                found.gripper_parts[side] = "hand"
        elif present & ARM_WORDS:
            found.arms.setdefault(side, []).append(index)
    found.ee_position = {s: [a[k] for k in range(3)] for s, a in positions.items() if len(a) == 3}
    found.ee_rotation = {s: [a[k] for k in range(3)] for s, a in rotations.items() if len(a) == 3}
    return found


@dataclass(frozen=True)
class Keystate:
    frame: int
    kind: str  # grasp | release | rest
    arm: str  # "left", "right" or "" (one arm)
    part: str  # "gripper" or "hand" (grasp/release), "arm" (rest)

    def fact(self, time: float) -> str:
        """``the right hand closes at 3.200 s (grasp)``."""
        who = f"the {self.arm} {self.part}" if self.arm else f"the {self.part}"
        verb = {"grasp": "closes", "release": "opens", "rest": "comes to rest"}[self.kind]
        return f"{who} {verb} at {time:.3f} s ({self.kind})"

    def content(self) -> str:
        """The staging row's content: what a diff of the staging file shows."""
        return json.dumps(
            {"arm": self.arm or None, "kind": self.kind, "part": self.part}, sort_keys=True
        )


def parse_keystate(content: str) -> tuple[str, str, str]:
    """(kind, arm, part) of a keystate row's content (see ``Keystate.content``)."""
    value = json.loads(content)
    return value["kind"], value.get("arm") or "", value["part"]


def smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Centred moving average over ``frames`` (edges use the frames they have)."""
    if frames <= 1 or len(x) < 2:
        return np.asarray(x, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    kernel = np.ones(frames)
    pad = frames // 2
    shape = (len(x), 1) if x.ndim == 1 else (len(x), x.shape[1])
    x2 = x.reshape(shape)
    out = np.empty_like(x2)
    for c in range(x2.shape[1]):
        total = np.convolve(x2[:, c], kernel, mode="full")[pad : pad + len(x)]
        count = np.convolve(np.ones(len(x)), kernel, mode="full")[pad : pad + len(x)]
        out[:, c] = total / count
    return out.reshape(x.shape)


def _frames(seconds: float, fps: float) -> int:
    return max(1, int(round(seconds * fps)))


def gripper_opening(values: np.ndarray, settings: Mapping) -> np.ndarray | None:
    """A gripper's opening scaled to 0 (most closed) .. 1 (most open); None if it never acts."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if settings["gripper_closes_toward"] == "high":
        x = -x
    lo, hi = float(x.min()), float(x.max())
    scale = max(abs(lo), abs(hi))
    if hi - lo <= 0 or hi - lo < settings["gripper_min_range"] * scale:
        return None
    return (x - lo) / (hi - lo)


@dataclass(frozen=True)
class Transition:
    start: int  # where the opening starts moving (the motion primitive begins)
    middle: int  # the keystate: the crossing of the middle
    end: int  # where it stops moving
    closing: bool


def gripper_transitions(opening: np.ndarray, settings: Mapping, fps: float) -> list[Transition]:
    """Closings and openings between known states, flickers shorter than
    ``min_hold_seconds`` dropped."""
    n = smooth(opening, _frames(settings["smooth_seconds"], fps))
    low, high = settings["gripper_low"], settings["gripper_high"]
    state = "closed" if n[0] < low else "open"
    last_in_state = 0
    out: list[Transition] = []
    for i in range(1, len(n)):
        now = "closed" if n[i] < low else "open" if n[i] > high else None
        if now is None:
            continue
        if now != state:
            closing = now == "closed"
            middle = next(
                j
                for j in range(i, last_in_state, -1)
                if (n[j] < 0.5 <= n[j - 1] if closing else n[j] > 0.5 >= n[j - 1])
            )
            sign = 1 if closing else -1  # the direction the opening moves
            start, end = middle, middle
            while start > last_in_state and sign * (n[start - 1] - n[start]) > 0:
                start -= 1
            while end + 1 < len(n) and sign * (n[end] - n[end + 1]) > 0:
                end += 1
            out.append(Transition(start, middle, end, closing))
        state, last_in_state = now, i
    hold = _frames(settings["min_hold_seconds"], fps)
    kept: list[Transition] = []
    for t in out:
        if kept and t.middle - kept[-1].middle < hold and t.closing != kept[-1].closing:
            kept.pop()  # closed and opened again at once: a flicker, not two events
            continue
        kept.append(t)
    return kept


def arm_speed(joints: np.ndarray, settings: Mapping, fps: float) -> np.ndarray | None:
    """Smoothed joint-space speed over the arm's peak speed; None for an arm that never moves."""
    q = smooth(np.asarray(joints, dtype=np.float64), _frames(settings["smooth_seconds"], fps))
    if q.ndim == 1:
        q = q[:, None]
    if len(q) < 3 or float(np.ptp(q, axis=0).max()) < settings["arm_min_range"]:
        return None
    speed = np.linalg.norm(np.gradient(q, axis=0), axis=1) * fps
    peak = float(np.percentile(speed, 95))
    return speed / peak if peak > 0 else None


def rest_onsets(speed: np.ndarray, settings: Mapping, fps: float) -> list[int]:
    """Frames where the arm comes to rest for at least ``rest_min_seconds``."""
    still = speed < settings["rest_speed"]
    need = _frames(settings["rest_min_seconds"], fps)
    onsets, i = [], 0
    while i < len(still):
        if not still[i]:
            i += 1
            continue
        j = i
        while j < len(still) and still[j]:
            j += 1
        if i > 0 and j - i >= need:
            onsets.append(i)
        i = j
    return onsets


@dataclass
class EpisodeSignals:
    """What one episode's signals say: keystates and the primitive at every frame."""

    keystates: list[Keystate]
    primitives: list[str]  # one phrase per frame ("" where nothing is known)


def _who(arm: str, part: str) -> str:
    return f"the {arm} {part}" if arm else f"the {part}"


def analyse(
    values: np.ndarray, channels: Channels, settings: Mapping, fps: float
) -> EpisodeSignals:
    """Keystates and per-frame motion primitives of one episode (``values``: frames x dims).

    An arm's primitives shorter than ``motion_min_seconds`` join a neighbour; a gripper's
    opening or closing is always kept (it is short, and it is what matters most).
    """
    values = np.asarray(values, dtype=np.float64)
    min_frames = _frames(settings["motion_min_seconds"], fps)
    frames = len(values)
    keystates: list[Keystate] = []
    per_arm: dict[str, list[str]] = {}
    for arm, idx in sorted(channels.grippers.items()):
        part = channels.gripper_parts.get(arm, "gripper")
        opening = gripper_opening(values[:, idx], settings)
        if opening is None:
            continue
        phrases = per_arm.setdefault(arm, [""] * frames)
        for t in gripper_transitions(opening, settings, fps):
            kind = "grasp" if t.closing else "release"
            keystates.append(Keystate(t.middle, kind, arm, part))
            verb = "close" if t.closing else "open"
            for f in range(t.start, t.end + 1):
                phrases[f] = f"{verb} {_who(arm, part)}"
    for arm in sorted(set(channels.arms) | set(channels.ee_position)):
        moving = _arm_phrases(values, channels, arm, settings, fps)
        if moving is None:
            continue
        speed, phrases_arm = moving
        for f in rest_onsets(speed, settings, fps):
            keystates.append(Keystate(f, "rest", arm, "arm"))
        phrases = per_arm.setdefault(arm, [""] * frames)
        for f, phrase in enumerate(_per_frame(primitive_runs(phrases_arm, min_frames), frames)):
            phrases[f] = phrases[f] or phrase
    keystates.sort(key=lambda k: (k.frame, KINDS.index(k.kind), k.arm))
    merged = [
        "; ".join(p for arm in sorted(per_arm) if (p := per_arm[arm][f])) for f in range(frames)
    ]
    return EpisodeSignals(keystates, merged)


def _arm_phrases(values, channels: Channels, arm: str, settings, fps):
    """(normalised speed, phrase per frame) of one arm, or None when it never moves."""
    position = channels.ee_position.get(arm)
    joints = channels.arms.get(arm)
    speed = arm_speed(values[:, joints or position], settings, fps)
    if speed is None:
        return None
    who = _who(arm, "arm")
    phrases = [f"hold {who} still" if s < settings["rest_speed"] else f"move {who}" for s in speed]
    if position:
        _ee_phrases(values, channels, arm, settings, fps, phrases)
    return speed, phrases


def _ee_phrases(values, channels: Channels, arm: str, settings, fps, phrases: list[str]) -> None:
    """Name moving frames by the end effector's direction in the base frame (ECoT's words)."""
    window = _frames(settings["smooth_seconds"], fps)
    who = _who(arm, "arm")
    velocity = np.gradient(smooth(values[:, channels.ee_position[arm]], window), axis=0)
    speed = np.linalg.norm(velocity, axis=1)
    peak = float(np.percentile(speed, 95)) or 1.0
    rotation = None
    if arm in channels.ee_rotation:
        angles = np.unwrap(values[:, channels.ee_rotation[arm]], axis=0)
        rotation = np.gradient(smooth(angles, window), axis=0)
        rot_peak = float(np.percentile(np.abs(rotation).max(axis=1), 95)) or 1.0
    for f, v in enumerate(velocity):
        if speed[f] >= settings["rest_speed"] * peak:
            main = np.abs(v).max()
            words = [
                DIRECTIONS[k][0 if v[k] > 0 else 1]
                for k in np.argsort(-np.abs(v))
                if abs(v[k]) >= SECONDARY_AXIS * main
            ]
            phrases[f] = f"move {who} {' and '.join(words)}"
        elif (
            rotation is not None and np.abs(rotation[f]).max() >= settings["rest_speed"] * rot_peak
        ):
            k = int(np.abs(rotation[f]).argmax())
            sense = "positive" if rotation[f][k] > 0 else "negative"
            phrases[f] = f"rotate {who} ({ROTATION_WORDS[k]}, {sense})"


def _per_frame(runs: Sequence[tuple[int, str]], frames: int) -> list[str]:
    out = [""] * frames
    for (start, phrase), end in zip(runs, [r[0] for r in runs[1:]] + [frames], strict=True):
        out[start:end] = [phrase] * (end - start)
    return out


def primitive_runs(primitives: Sequence[str], min_frames: int) -> list[tuple[int, str]]:
    """(start frame, phrase) where the primitive changes; runs shorter than ``min_frames``
    join the run before them (the first run, the one after), so each lasts a while."""
    runs: list[list] = []
    for f, phrase in enumerate(primitives):
        if runs and runs[-1][1] == phrase:
            continue
        runs.append([f, phrase])
    changed = True
    while changed and len(runs) > 1:
        changed = False
        ends = [r[0] for r in runs[1:]] + [len(primitives)]
        lengths = [e - r[0] for r, e in zip(runs, ends, strict=True)]
        k = min(range(len(runs)), key=lambda j: (lengths[j], j))
        if lengths[k] >= min_frames:
            break
        if k == 0:
            runs[1][0] = 0
        del runs[k]
        # neighbours saying the same thing are one run
        runs = [r for i, r in enumerate(runs) if i == 0 or r[1] != runs[i - 1][1]]
        changed = True
    return [(int(f), phrase) for f, phrase in runs if phrase]
