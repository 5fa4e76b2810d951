"""`episcribe review` in a real browser: headless Debian Chromium driven by Playwright,
against the real server process, over a real workflow run (fake model) on a synthetic
H.264 dataset. One run and one server for the whole file; the edits are made once
(`reviewed`) and each test checks one outcome of them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from smk import Workspace

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Shared memory may be a small tmpfs in a container; decoded video frames go to /tmp.
    "--disable-dev-shm-usage",
]
NAME = "synth_review"
REVIEW = Path("results") / NAME / "review"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")


class ReviewServer:
    def __init__(self, ws: Workspace, name: str = NAME):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from episcribe.command.cli import main; exit(main())"]
            + ["review", f"results/{name}"],
            cwd=ws.root,
            env=ws.environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines = []
        for line in self.proc.stdout:
            lines.append(line)
            found = re.search(r"(http://\S+)/\?token=(\S+)", line)
            if found:
                self.base, self.token = found.groups()
                break
        else:
            raise AssertionError("the review server printed no URL:\n" + "".join(lines))

    @property
    def url(self) -> str:
        return f"{self.base}/?token={self.token}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    from synth import make_dataset

    root = tmp_path_factory.mktemp("review")
    dataset = make_dataset(root / NAME, episodes=2, seconds=4.0, episodes_per_file=2)
    ws = Workspace(root / "ws", dataset)
    ws.run()
    return ws


@pytest.fixture(scope="module")
def server(workspace):
    server = ReviewServer(workspace)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser, server):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    page.goto(server.url)
    page.wait_for_selector("body[data-loaded]")
    yield page
    assert not errors, errors


@pytest.fixture(scope="module")
def g1_server(g1_source, tmp_path_factory):
    """The real AV1 dataset, one episode, annotated without VQA (the quickest run)."""
    root = tmp_path_factory.mktemp("review_g1")
    ws = Workspace(root / "ws", g1_source, dataset__only_episodes=[0], vqa__enabled=False)
    ws.run()
    server = ReviewServer(ws, "g1_bottle")
    yield server
    server.stop()


def _subtasks(path: Path) -> list[tuple[float, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((r["timestamp"], r["content"]) for r in rows if r["style"] == "subtask")


def _open_episode(page, episode: int) -> None:
    base = re.match(r"http://[^/]+", page.url).group(0)  # the token is in a cookie now
    page.goto(f"{base}/episode/{episode}")
    page.wait_for_selector("body[data-loaded]")
    _until(page, "document.querySelector('video').readyState >= 2")


def _until(page, condition: str) -> None:
    """Wait for a page condition, polled on a timer rather than on animation frames (which
    a headless browser paints only when its compositor gets to run)."""
    page.wait_for_function(condition, polling=50)


@pytest.fixture(scope="module")
def reviewed(workspace, page):
    """Drag episode 0's second boundary 0.8 s earlier, then rename its second subtask."""
    _open_episode(page, 0)
    view = page.evaluate("data")
    frames = view["frames"]
    before = sorted((r["timestamp"], r["content"]) for r in view["rows"] if r["style"] == "subtask")
    assert len(before) >= 2, "the synthetic episode needs a boundary to move"
    handle = page.locator(".handle[data-i='1']").bounding_box()
    lane = page.locator(".lane.subtask .lane-body").bounding_box()
    span = frames[-1] + 1 / view["fps"] - frames[0]
    target = before[1][0] - 0.8
    x = lane["x"] + (target - frames[0]) / span * lane["width"]
    y = handle["y"] + handle["height"] / 2
    page.mouse.move(handle["x"] + handle["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.wait_for_selector("#message.ok:has-text('boundary 1 moved')")
    page.click(".bar[data-i='1']")
    page.fill("#label-input", "grasp the bottle by its neck")
    page.press("#label-input", "Enter")
    page.wait_for_selector(".bar[data-i='1']:has-text('grasp the bottle by its neck')")
    # The interjection moved with the boundary; give the robot other words to say.
    page.click(".tick.interjection")
    page.fill("#reply-input", "Sure, the neck first.")
    page.press("#reply-input", "Enter")
    page.wait_for_selector("#message.ok:has-text('reply saved')")
    # Delete the first VQA pair of the first camera, from the keyboard.
    vqa = page.locator(".tick.vqa").first
    deleted = (float(vqa.get_attribute("data-t")), view["cameras"][0]["key"])
    vqa.click()
    page.keyboard.press("x")
    page.wait_for_selector("#message.ok:has-text('deleted')")
    return {"before": before, "target": target, "frames": frames, "vqa": deleted}


def _speech(row: dict) -> str:
    (call,) = row["tool_calls"]
    call = json.loads(call) if isinstance(call, str) else call  # as the dataset stores it
    arguments = call["function"]["arguments"]
    return (json.loads(arguments) if isinstance(arguments, str) else arguments)["text"]


def test_the_token_is_required(server):
    for url in (f"{server.base}/", f"{server.base}/api/episodes", f"{server.base}/?token=wrong"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url)
        assert err.value.code == 403
        assert "token" in err.value.read().decode()
    with urllib.request.urlopen(f"{server.base}/api/episodes?token={server.token}") as answer:
        assert [e["episode"] for e in json.load(answer)["episodes"]] == [0, 1]


def test_the_list_shows_each_episode_and_its_review_state(page, server):
    page.goto(server.url)
    page.wait_for_selector("body[data-loaded]")
    rows = page.locator("#episodes tr")
    assert rows.count() == 2
    assert "not reviewed" in rows.nth(1).inner_text() or "not reviewed" in rows.nth(0).inner_text()
    page.select_option("#state-filter", "flagged")
    assert page.locator("#episodes tr").count() == 0


def test_the_video_plays_and_seeks(page):
    _open_episode(page, 1)
    segment_start = page.evaluate("videos[0].cam.from")
    assert page.evaluate("document.querySelector('video').currentTime") == pytest.approx(
        segment_start, abs=0.05
    )
    page.keyboard.press(" ")
    _until(page, f"document.querySelector('video').currentTime > {segment_start + 0.5}")
    page.keyboard.press(" ")
    assert page.evaluate("document.querySelector('video').paused")
    # Shift+Right/Left seek a second; '.' steps one frame (0.1 s at 10 fps).
    played = page.evaluate("now()")
    page.keyboard.press("Shift+ArrowRight")
    assert page.evaluate("now()") == pytest.approx(played + 1, abs=0.01)
    page.keyboard.press("Shift+ArrowLeft")
    back = page.evaluate("now()")
    assert back == pytest.approx(played, abs=0.01)
    page.keyboard.press(".")
    stepped = page.evaluate("now()")
    # Playback paused between frames; '.' lands on the next frame's time.
    frames = page.evaluate("frames()")
    following = next(f for f in frames if f > back + 1e-3)
    assert stepped == pytest.approx(following + 0.002, abs=1e-3)


def test_a_dragged_boundary_and_an_edited_label_persist_after_reload(page, reviewed, workspace):
    page.reload()
    page.wait_for_selector("body[data-loaded]")
    after = sorted(
        (r["timestamp"], r["content"]) for r in page.evaluate("rows") if r["style"] == "subtask"
    )
    moved, label = after[1]
    assert label == "grasp the bottle by its neck"
    assert moved in reviewed["frames"] and moved == pytest.approx(reviewed["target"], abs=0.15)
    assert page.locator("#state").inner_text() == "corrected"
    rows = page.evaluate("rows")
    t, camera = reviewed["vqa"]
    assert not [
        r for r in rows if r["style"] == "vqa" and (r["timestamp"], r["camera"]) == (t, camera)
    ]
    (interjection,) = [r for r in rows if r["style"] == "interjection"]
    (reply,) = [
        r for r in rows if r["style"] is None and r["timestamp"] == interjection["timestamp"]
    ]
    assert interjection["timestamp"] == moved and _speech(reply) == "Sure, the neck first."
    # On disk: the review module's staging file, with the rows at the dragged boundary.
    assert _subtasks(workspace.root / REVIEW / "episode_000000.jsonl") == after


def test_an_edit_that_breaks_a_resolver_rule_is_refused_with_its_reason(page, reviewed, workspace):
    review = workspace.root / REVIEW / "episode_000000.jsonl"
    saved = review.read_text()
    _open_episode(page, 0)
    # Splitting exactly at a boundary would put two subtask rows at one timestamp.
    page.keyboard.press("]")
    page.keyboard.press("s")
    message = page.locator("#message.error")
    message.wait_for()
    assert "refused" in message.inner_text()
    assert "active_at(style=subtask) cannot choose" in message.inner_text()
    assert review.read_text() == saved
    assert page.locator(".bar").count() == 2


def test_the_correction_survives_a_plan_rerun_and_reaches_the_dataset(reviewed, workspace):
    review = workspace.root / REVIEW / "episode_000000.jsonl"
    corrected = _subtasks(review)
    prompt = workspace.root / "prompts" / "plan" / "segment.txt"
    prompt.write_text(prompt.read_text() + "\nPrefer short labels.\n")
    run = workspace.run()
    assert "annotate_plan" in run.modules_run() and "write_dataset" in run.rules
    assert "1 episode kept from review" in run.output
    assert _subtasks(review) == corrected
    table = pq.read_table(workspace.root / "results" / NAME / "annotated" / "data").to_pylist()
    first = next(r for r in table if r["episode_index"] == 0)
    written = sorted(
        (round(r["timestamp"], 4), r["content"])
        for r in first["language_persistent"]
        if r["style"] == "subtask"
    )
    assert written == [(round(t, 4), label) for t, label in corrected]
    # The events too: the deleted VQA pair is gone, the reply is the person's.
    t, camera = reviewed["vqa"]
    frames = [r for r in table if r["episode_index"] == 0]
    at = next(r for r in frames if r["timestamp"] == pytest.approx(t, abs=1e-6))
    assert not [e for e in at["language_events"] if e["style"] == "vqa" and e["camera"] == camera]
    said = [_speech(e) for r in frames for e in r["language_events"] if e["style"] is None]
    assert "Sure, the neck first." in said


def test_a_correction_alone_reruns_validation_and_the_write_only(reviewed, workspace, server):
    workspace.run()  # up to date after the plan re-run of the test above
    url = f"{server.base}/api/episodes/0?token={server.token}"
    with urllib.request.urlopen(url) as answer:
        rows = json.load(answer)["rows"]
    last = max(r["timestamp"] for r in rows if r["style"] == "subtask")
    rows = [
        {**r, "content": "put the bottle down"}
        if r["style"] == "subtask" and r["timestamp"] == last
        else r
        for r in rows
    ]
    request = urllib.request.Request(
        url, data=json.dumps({"rows": rows}).encode(), method="PUT",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request) as answer:
        assert json.load(answer)["state"] == "corrected"
    run = workspace.run()
    assert not [r for r in run.rules if r.startswith("annotate_")]
    assert {"validate_staging", "write_dataset", "render_report"} <= set(run.rules)
    table = pq.read_table(workspace.root / "results" / NAME / "annotated" / "data").to_pylist()
    first = next(r for r in table if r["episode_index"] == 0)
    assert "put the bottle down" in [r["content"] for r in first["language_persistent"]]


def test_reviewed_episodes_are_gold(reviewed, workspace):
    from episcribe.review import gold_segments

    gold = gold_segments(workspace.root / "results" / NAME)
    assert list(gold) == [0]
    segments = gold[0]
    saved = _subtasks(workspace.root / REVIEW / "episode_000000.jsonl")
    assert [(s["start_sec"], s["label"]) for s in segments] == saved
    assert segments[0]["end_sec"] == segments[1]["start_sec"]
    lines = (workspace.root / REVIEW / "gold.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"episode": 0, "segments": segments}]


def test_flagging_keeps_the_note_and_the_model_rows(page, workspace):
    _open_episode(page, 1)
    page.once("dialog", lambda dialog: dialog.accept("the cube is never grasped"))
    page.keyboard.press("f")
    page.wait_for_selector("#state:has-text('flagged')")
    state = json.loads((workspace.root / REVIEW / "episode_000001.json").read_text())
    assert state["state"] == "flagged" and state["note"] == "the cube is never grasped"
    # A flag alone corrects nothing: no review rows replace the model's.
    assert not (workspace.root / REVIEW / "episode_000001.jsonl").exists()


def _key(row: dict) -> str:
    """A row as comparable text (JavaScript writes 1.0 as 1)."""
    return json.dumps({**row, "timestamp": float(row["timestamp"])}, sort_keys=True)


def test_split_then_merge_gives_back_the_model_rows(page, workspace):
    _open_episode(page, 1)
    model = sorted(_key(r) for r in page.evaluate("rows"))
    bars = page.locator(".bar").count()
    # Into the middle of the first subtask, then split it there.
    page.evaluate(
        "(() => { const s = subtasks(); const until = s.length > 1 ? s[1].timestamp : end();"
        " seek(snap((s[0].timestamp + until) / 2)); })()"
    )
    page.keyboard.press("s")
    page.wait_for_selector("#message.ok:has-text('split at')")
    assert page.locator(".bar").count() == bars + 1
    assert page.locator("#state").inner_text() == "corrected"
    page.click(".bar[data-i='0']")
    page.keyboard.press("m")
    page.wait_for_selector("#message.ok:has-text('merged')")
    assert page.locator(".bar").count() == bars
    # The rows are the model's again, so the review says accepted.
    assert page.locator("#state").inner_text() == "accepted"
    saved = (workspace.root / REVIEW / "episode_000001.jsonl").read_text().splitlines()
    assert sorted(_key(json.loads(line)) for line in saved) == model
    # Every episode is reviewed now: 'n' says so instead of leaving the page.
    page.keyboard.press("n")
    page.wait_for_selector("#message:has-text('every episode is reviewed')")


def test_an_av1_episode_plays_and_seeks(page, g1_server):
    # The file's one page, as every other test uses; last in the file, as it leaves the
    # page on this server.
    page.goto(g1_server.url)
    page.wait_for_selector("body[data-loaded]")
    _open_episode(page, 0)
    assert page.evaluate("document.querySelector('video').videoWidth") == 640
    segment_start = page.evaluate("videos[0].cam.from")
    page.keyboard.press(" ")
    _until(page, f"document.querySelector('video').currentTime > {segment_start + 0.3}")
    page.keyboard.press(" ")
    boundaries = [
        t
        for t, _ in sorted(
            (r["timestamp"], r["content"]) for r in page.evaluate("rows") if r["style"] == "subtask"
        )
    ]
    later = [t for t in boundaries if t > page.evaluate("now()") + 1e-3]
    assert later, "the episode's subtasks should go on after half a second"
    page.keyboard.press("]")
    boundary = segment_start + later[0]
    _until(page, f"Math.abs(document.querySelector('video').currentTime - {boundary}) < 0.01")
