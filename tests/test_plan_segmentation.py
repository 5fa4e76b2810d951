"""How the plan module segments: what its sheets show, when an episode is one request,
how overlapping windows are reconciled, the relabel pass, and that stitching and snapping
keep a perfect answer perfect. Real HTTP to the fake server (which keeps the bodies it was
sent), real video decoding and JPEGs, one real snakemake run.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re

import numpy as np
import pytest
from PIL import Image
from smk import Workspace
from test_fake_server import run_fake
from test_modules_plan import DEFAULTS, check_cover, run_module, settings_for

from episcribe.lerobot.frames import burn_label
from episcribe.modules.base import frame_time, snap_indices
from episcribe.modules.plan import images_per_request
from episcribe.modules.plan.grounding import TimedKeystate, snap_boundaries
from episcribe.modules.plan.stitching import stitch
from episcribe.modules.plan.windows import reconcile
from episcribe.modules.signals.analysis import Keystate

GREY = 128


@pytest.fixture(scope="module")
def episode_12s(tmp_path_factory):
    """One 12-s episode at 10 fps, 320x240: 25 samples at 2 fps (two sheets of 20)."""
    from synth import make_dataset

    root = tmp_path_factory.mktemp("seg") / "synth"
    return make_dataset(root, episodes=1, seconds=12.0, fps=10, cameras=("cam",), size=(320, 240))


def kept(directory) -> list[dict]:
    files = sorted(directory.glob("*.json"), key=lambda p: int(p.stem))
    return [json.loads(p.read_bytes()) for p in files]


def kind(body: dict) -> str:
    return body["response_format"]["json_schema"]["name"]


def images(body: dict) -> list[Image.Image]:
    out = []
    for message in body["messages"]:
        for part in message["content"] if isinstance(message["content"], list) else []:
            if part.get("type") == "image_url":
                data = part["image_url"]["url"].split(",", 1)[1]
                out.append(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    return out


def text(body: dict) -> str:
    parts = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [p["text"] for p in content if p.get("type") == "text"]
    return "\n".join(parts)


def listed_times(body: dict) -> list[float]:
    match = re.search(r"Frame timestamps \(s\): ([-0-9., ]+)", text(body))
    return [float(t) for t in match.group(1).split(",")]


# -- the sheets the model reads ---------------------------------------------------------


def label_box(tile: np.ndarray) -> tuple[int, int]:
    """Height and width of the dark label box at a tile's top-left corner."""
    dark = tile.max(axis=2) < 70
    rows = np.flatnonzero(dark[:, 1])
    height = int(np.argmax(np.diff(rows) > 1)) + 1 if np.any(np.diff(rows) > 1) else len(rows)
    cols = np.flatnonzero(dark[1, :])
    width = int(np.argmax(np.diff(cols) > 1)) + 1 if np.any(np.diff(cols) > 1) else len(cols)
    return height, width


def test_segment_sheets_are_5_by_4_tiles_of_224_px_each_labelled_with_its_time(
    episode_12s, tmp_path
):
    with run_fake(tmp_path, "--keep-requests", str(tmp_path / "bodies")) as (base, _):
        result = run_module("plan", episode_12s, 0, base, tmp_path / "m.jsonl")
    (segment,) = [b for b in kept(tmp_path / "bodies") if kind(b) == "segment"]
    times = listed_times(segment)
    assert len(times) == 25 and times[1] - times[0] == pytest.approx(0.5, abs=0.06)
    sheets = images(segment)
    # 320x240 frames -> 224x168 tiles; 20 frames on the first sheet, 5 (one row) on the next.
    assert [s.size for s in sheets] == [(1120, 672), (1120, 168)]
    tiles = []
    for sheet in sheets:
        pixels = np.asarray(sheet)
        for r in range(sheet.size[1] // 168):
            for c in range(5):
                tiles.append(pixels[r * 168 : (r + 1) * 168, c * 224 : (c + 1) * 224])
    assert len(tiles) == 25
    for k, tile in enumerate(tiles):
        height, width = label_box(tile)
        # Legible at tile scale: the box is over a tenth of the tile's height, dark, with
        # light text in it, and in the top-left corner only.
        assert height >= 168 // 10 and 40 < width < 224 // 2
        box = tile[:height, :width]
        assert (box.max(axis=2) < 70).mean() > 0.5 and (box.min(axis=2) > 180).any()

        # The text is this tile's own time: the sent box matches the label drawn for it
        # better than the label of any other tile's time.
        errors = {j: np.abs(drawn(t, height, width) - box).mean() for j, t in enumerate(times)}
        assert min(errors, key=errors.get) == k, (k, times[k])
    assert check_cover(result, 0)


def drawn(t: float, height: int, width: int) -> np.ndarray:
    """The label box ``burn_label`` draws for time ``t`` on a 224x168 tile."""
    blank = Image.new("RGB", (224, 168), (GREY, GREY, GREY))
    return np.asarray(burn_label(blank, f"{t:.3f}s"))[:height, :width].astype(float)


# -- one request when it fits, overlapping windows when not ---------------------------


@pytest.mark.parametrize(("max_frames", "requests"), [(25, 1), (24, 2)])
def test_whole_episode_in_one_request_exactly_when_its_sheets_fit_the_limit(
    episode_12s, tmp_path, max_frames, requests
):
    settings = settings_for("plan", sheet_columns=2, sheet_rows=2, max_video_frames=max_frames)
    limit = images_per_request(settings)  # what the serve command's image limit is set to
    bodies = tmp_path / "bodies"
    args = ("--keep-requests", str(bodies), "--limit-mm-per-prompt", json.dumps({"image": limit}))
    with run_fake(tmp_path, *args) as (base, log):
        result = run_module("plan", episode_12s, 0, base, tmp_path / "m.jsonl", settings=settings)
        statuses = [json.loads(line)["status"] for line in log.read_text().splitlines()]
    assert set(statuses) == {200}, "every request fits the computed image limit"
    segments = [b for b in kept(bodies) if kind(b) == "segment"]
    assert len(segments) == requests
    windows = sorted((listed_times(b) for b in segments), key=lambda w: w[0])
    last = round(float(result.episode.timestamps[-1]), 3)
    assert windows[0][0] == 0.0 and windows[-1][-1] == last
    for a, b in zip(windows, windows[1:], strict=False):
        assert len(set(a) & set(b)) >= 4, "consecutive windows share at least one sheet"
    assert all(len(images(b)) <= limit for b in segments)
    check_cover(result, 0)


def overlapping_windows() -> list[list[float]]:
    return [[k / 2 for k in range(0, 20)], [k / 2 for k in range(10, 30)]]  # overlap 5-9.5


def test_a_boundary_in_the_overlap_is_found_once_and_window_edges_are_no_boundaries():
    windows = overlapping_windows()
    first = [("pick up the cup", 0.0, 3.0), ("put the cup down", 3.0, 6.5)]
    first.append(("open the drawer", 6.5, 9.5))  # runs to the window's edge: no cut there
    second = [("put the cup down", 5.0, 6.5), ("open the drawer", 6.5, 12.0)]
    second.append(("close the drawer", 12.0, 14.5))
    spans = reconcile(windows, [first, second], period=0.5)
    assert [(s[0], s[1]) for s in spans] == [
        ("pick up the cup", 0.0),
        ("put the cup down", 3.0),
        ("open the drawer", 6.5),
        ("close the drawer", 12.0),
    ]


@pytest.mark.parametrize(
    ("seen_first", "seen_second", "kept_start"),
    [(7.0, 7.4, 7.0), (7.2, 7.6, 7.6)],  # the start farther from its window's edge stays
)
def test_one_boundary_seen_by_both_windows_on_either_side_of_the_middle_is_kept_once(
    seen_first, seen_second, kept_start
):
    windows = overlapping_windows()
    first = [("pick up the cup", 0.0, seen_first), ("put the cup down", seen_first, 9.5)]
    second = [("pick up the cup", 5.0, seen_second), ("put the cup down", seen_second, 14.5)]
    starts = [s[1] for s in reconcile(windows, [first, second], period=0.5)]
    assert starts == [0.0, kept_start]


# -- stitching and snapping keep a perfect answer ---------------------------------------

TS30 = (np.arange(900, dtype=np.float32) / np.float32(30)).astype(np.float32)  # 30 s at 30 fps


def gold() -> list[tuple[str, float, float]]:
    """A fine-grained segmentation on real frame times, with quick events (0.5-1 s)."""
    cuts = [0, 45, 60, 150, 168, 300, 330, 510, 525, 720, 899]
    words = ["reach and pick up the cup", "lift it", "carry the cup to the tray", "release",
             "pick up the lid", "press it on", "wipe the table", "drop the sponge",
             "push the tray away", "open the drawer"]  # fmt: skip
    return [
        (w, frame_time(TS30, a), frame_time(TS30, b))
        for w, a, b in zip(words, cuts[:-1], cuts[1:], strict=True)
    ]


def test_a_perfect_segmentation_comes_out_of_stitching_and_snapping_unchanged():
    spans = gold()
    expected = [(int(snap_indices(TS30, [s])[0]), w) for w, s, _ in spans]
    assert expected[4][0] - expected[3][0] == 18  # the 0.6-s release is kept
    assert stitch(spans, TS30, DEFAULTS["plan"]["plan_max_steps"], 0.5) == expected
    # Over two overlapping windows that both saw it exactly.
    times = [float(t) for t in TS30[::15]]
    windows = [times[:40], times[30:]]
    clipped = [
        [(t, max(a, w[0]), min(b, w[-1])) for t, a, b in spans if a <= w[-1] and b >= w[0]]
        for w in windows
    ]
    assert stitch(reconcile(windows, clipped, 0.5), TS30, 0, 0.5) == expected
    # Keystates on the gold boundaries move nothing; one 0.3 s off moves that boundary.
    on = [TimedKeystate(frame_time(TS30, i), Keystate(i, "grasp", "", "")) for i, _ in expected]
    assert snap_boundaries(expected, TS30, on, 0.5) == (expected, [])
    off = [TimedKeystate(frame_time(TS30, 159), Keystate(159, "release", "", ""))]
    moved, rows = snap_boundaries(expected, TS30, off, 0.5)
    assert [i for i, _ in moved] == [i if i != 150 else 159 for i, _ in expected]
    assert len(rows) == 1


def test_short_events_survive_stitching_and_gaps_go_to_the_subtask_before():
    spans = [("pick up the cup", 0.2, 2.0), ("put the cup down", 2.6, 3.2)]
    spans.append(("close the drawer", 3.2, 4.9))
    ts = (np.arange(50, dtype=np.float32) / np.float32(10)).astype(np.float32)
    # The 0.6-s place stays; the gap 2.0-2.6 belongs to the pick; 0-0.2 to the first.
    assert stitch(spans, ts, 0, DEFAULTS["plan"]["min_subtask_seconds"]) == [
        (0, "pick up the cup"),
        (26, "put the cup down"),
        (32, "close the drawer"),
    ]


# -- relabel ----------------------------------------------------------------------------


def test_relabel_sends_three_sheets_and_the_first_label_and_its_answer_is_what_is_written(
    episode_12s, tmp_path
):
    settings = settings_for("plan", relabel=True)
    bodies = tmp_path / "bodies"
    with run_fake(tmp_path, "--keep-requests", str(bodies)) as (base, _):
        # The fake answers the same request the same way: without relabel, the same
        # segment request gives the first-pass labels.
        plain = run_module("plan", episode_12s, 0, base, tmp_path / "p.jsonl")
        for body in bodies.glob("*.json"):
            body.unlink()
        result = run_module("plan", episode_12s, 0, base, tmp_path / "m.jsonl", settings=settings)
    sent = kept(bodies)
    relabels = sorted(
        (b for b in sent if kind(b) == "relabel"),
        key=lambda b: int(re.search(r"Step (\d+) of", text(b)).group(1)),
    )
    subtasks = result.style("subtask")
    assert len(relabels) == len(subtasks) >= 2
    first_pass = [r["content"] for r in plain.style("subtask")]
    assert [r["timestamp"] for r in plain.style("subtask")] == [r["timestamp"] for r in subtasks]
    for k, body in enumerate(relabels):
        assert body["temperature"] == 0
        assert f'First-pass label of this step: "{first_pass[k]}"' in text(body)
        sheets = images(body)
        assert [s.size for s in sheets] == [(1120, 168)] * 3  # 5 tiles of 224 x 168 each
        grey = [bool((np.abs(np.asarray(s).astype(int) - GREY) <= 3).all()) for s in sheets]
        assert grey == [k == 0, False, k == len(relabels) - 1]
    # A neighbour's sheet is that neighbour's own: the same image in both calls.
    for body, following in itertools.pairwise(relabels):
        ours, theirs = images(body), images(following)
        assert np.array_equal(np.asarray(ours[2]), np.asarray(theirs[1]))
        assert np.array_equal(np.asarray(ours[1]), np.asarray(theirs[0]))
    # The rows carry the relabelled words: plan rows list them, memory calls fold them in.
    words = [r["content"] for r in subtasks]
    assert words != first_pass
    assert result.style("plan")[0]["content"].splitlines()[0] == f"1. {words[0]}"


# -- through snakemake ------------------------------------------------------------------


def test_snakemake_run_with_the_new_defaults_and_relabel(tmp_path):
    from synth import make_dataset

    dataset = make_dataset(tmp_path / "data", episodes=2, seconds=12.0, fps=10, seed=5)
    ws = Workspace(
        tmp_path / "ws",
        dataset,
        interjections__enabled=False,
        vqa__enabled=False,
        plan__relabel=True,
    )
    ws.run()
    calls = ws.fake_requests()
    assert calls and {c["status"] for c in calls} == {200}
    segments = [c for c in calls if c["kind"] == "segment"]
    assert len(segments) == 2, "each 12-s episode is one segment request"
    assert all(c["n_images"] == 2 for c in segments)  # 25 frames: sheets of 20 and 5
    subtasks = 0
    for index in (0, 1):
        rows = [
            json.loads(line)
            for line in (ws.root / f"results/data/staging/episode_{index:06d}/plan.jsonl")
            .read_text()
            .splitlines()
        ]
        starts = [r["timestamp"] for r in rows if r["style"] == "subtask"]
        assert starts[0] == 0.0 and starts == sorted(set(starts))
        subtasks += len(starts)
    relabels = [c for c in calls if c["kind"] == "relabel"]
    assert len(relabels) == subtasks and all(c["n_images"] == 3 for c in relabels)


def test_the_longest_segment_and_relabel_answers_fit_their_budgets():
    from test_modules_plan import PROMPTS

    from episcribe.modules.plan.run import TOKENS_PER_SUBTASK, _steps
    from episcribe.modules.prompts import PromptSet
    from episcribe.vlm.sizing import text_tokens

    vlm, plan = DEFAULTS["vlm"], DEFAULTS["plan"]
    budget = vlm["max_completion_tokens"]["segment"]
    # A 4-minute window without an explicit cap asks for as many as the budget holds.
    steps = _steps(plan, vlm, [0.0, 240.0], 481)
    assert steps == budget // TOKENS_PER_SUBTASK == 40
    prompts = PromptSet(PROMPTS)
    schema = prompts.get("segment").schema_with_items("subtasks", 1, steps)
    longest = schema["properties"]["subtasks"]["items"]["properties"]["instruction"]["maxLength"]
    item = {"instruction": "w" * longest, "start": 1234.567, "end": 1234.567}
    assert text_tokens(json.dumps({"subtasks": [item] * steps})) <= budget
    relabel = prompts.get("relabel").schema["properties"]["instruction"]["maxLength"]
    answer = json.dumps({"instruction": "w" * relabel})
    assert text_tokens(answer) <= vlm["max_completion_tokens"]["relabel"]
    # A 12-s window asks for at most one subtask a second.
    assert _steps(plan, vlm, [0.0, 12.0], 25) == 12
