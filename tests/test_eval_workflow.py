"""The whole chain with known answers: WGO-format fixture -> import-wgo -> a real snakemake
run against the fake server (oracle mode, or its ordinary answers) -> episcribe eval."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from smk import Workspace, free_port
from wgo_fixture import FIXTURE, Row, write_wgo

from episcribe.eval.command import eval_main
from episcribe.eval.metrics import Segment, pooled, score_corpus
from episcribe.eval.sources import read_source
from episcribe.eval.wgo import import_wgo
from episcribe.lerobot.dataset import LeRobotDataset
from episcribe.lerobot.frames import decode_frames
from episcribe.vlm.fake_oracle import Noise, noised, read_truth

# The plan module alone, without the calls that do not shape subtasks.
PLAN_ONLY = dict(
    interjections__enabled=False,
    vqa__enabled=False,
    plan__n_task_rephrasings=0,
    plan__emit_memory=False,
)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("wgo")
    bad = [
        Row("outside", 3.0, [(0.0, 2.0, "a"), (2.0, 5.0, "b")]),
        Row("no_segments", 2.0, []),
        Row("undecodable", 2.0, [(0.0, 2.0, "a")], video=b"\x00\x00\x00 ftypisom junk"),
    ]
    source = write_wgo(root / "wgo.parquet", [*FIXTURE[:2], *bad, *FIXTURE[2:]])
    return import_wgo([source], root / "import")


def scores(tmp_path: Path, gold: Path, *preds: Path) -> dict:
    out = tmp_path / f"eval-{len(list(tmp_path.glob('eval-*')))}.json"
    assert (
        eval_main(["--gold", str(gold), *[f"--pred={p}" for p in preds], "--json", str(out)]) == 0
    )
    return json.loads(out.read_text())


def test_import_writes_a_dataset_the_reader_takes_and_gold(imported):
    assert imported.episodes == 4
    assert [line.split(":")[0] for line in imported.skipped] == [
        "row 'outside'",
        "row 'no_segments'",
        "row 'undecodable'",
    ]
    assert "outside the 3.000 s video" in imported.skipped[0]
    dataset = LeRobotDataset.open(imported.dataset)
    assert dataset.episode_indices() == [0, 1, 2, 3]
    assert dataset.fps == 10 and dataset.cameras == ("observation.images.main",)
    gold = [json.loads(line) for line in imported.gold.read_text().splitlines()]
    assert [g["id"] for g in gold] == ["droid_a", "droid_b", "galaxea_a", "homer_a"]
    assert [g["source_family"] for g in gold] == ["droid", "droid", "galaxea", "homer"]
    for row, line in zip(FIXTURE, gold, strict=True):
        episode = dataset.load_episode(line["episode"])
        assert len(episode.timestamps) == round(row.seconds * 10)
        assert episode.task == row.instruction
        spans = [(s["start_sec"], s["end_sec"], s["label"]) for s in line["segments"]]
        assert spans == [(float(a), float(b), c) for a, b, c in row.segments]
    # The video still changes colour exactly at gold's first inner boundary (2.0 s).
    segment = dataset.episode_info(0).videos["observation.images.main"]
    before, at = decode_frames(segment, [1.9, 2.0])
    assert before.getpixel((40, 50)) != at.getpixel((40, 50))
    mapping = json.loads((imported.gold.parent / "episodes.json").read_text())
    assert mapping["2"] == {"id": "galaxea_a", "source_family": "galaxea"}


def test_import_resamples_and_letterboxes_a_row_of_another_rate_and_size(tmp_path: Path):
    odd = Row("odd", 3.0, [(0.0, 1.5, "a"), (1.5, 3.0, "b")], fps=20, size=(48, 48))
    done = import_wgo([write_wgo(tmp_path / "w.parquet", [FIXTURE[0], odd])], tmp_path / "out")
    dataset = LeRobotDataset.open(done.dataset)
    # The rows' most common rate and size (a tie goes to the first seen).
    assert dataset.fps == 10
    assert len(dataset.load_episode(1).timestamps) == 30  # 3 s at 10 fps
    frame = decode_frames(dataset.episode_info(1).videos["observation.images.main"], [0.0])[0]
    assert frame.size == (96, 64)
    # 48x48 scaled to 64x64 in the middle: black bars left and right, the colour inside.
    assert max(frame.getpixel((4, 40))) < 30 and max(frame.getpixel((48, 40))) > 100


def test_oracle_run_scores_perfectly_and_eval_reads_every_source(imported, tmp_path: Path):
    ws = Workspace(tmp_path / "ws", imported.dataset, vlm__fake__oracle=imported.gold, **PLAN_ONLY)
    ws.run()
    results = ws.root / "results" / "wgo_bench"
    report = scores(tmp_path, imported.gold, results, results / "annotated")
    run, dataset = report["predictions"]
    written = run["views"]["written"]["overall"]
    assert (written["gold"], written["predicted"], written["matched"]) == (12, 12, 12)
    assert written["f1"] == written["end_to_end_f1"] == 1.0
    # The model's spans before stitching, and before keystate snapping: the same here
    # (gap-free gold on whole frames, no subtask under plan.min_subtask_seconds, no signals).
    assert run["views"]["model"]["overall"]["f1"] == 1.0
    assert run["views"]["unsnapped"]["overall"]["f1"] == 1.0
    assert set(run["views"]["written"]["families"]) == {"droid", "galaxea", "homer"}
    # The annotated dataset's subtask rows say the same as the staging they came from.
    assert dataset["views"]["written"]["overall"] == written
    assert report["comparison"]["segmentation_f1"]["difference"] == 0.0
    cost = run["cost"]
    assert cost["total"]["calls"] == 4  # one segment call per episode (no describe first)
    assert cost["video_hours"] == pytest.approx(26 / 3600)
    assert cost["per_video_hour"]["calls"] == pytest.approx(4 * 3600 / 26)
    # One segment call an episode over its own frames: no prefix the server could reuse.
    assert 0 < cost["total"]["uncached_prompt_tokens"] <= cost["total"]["prompt_tokens"]
    # A prompt variant: its own results directory, compared side by side.
    variant = tmp_path / "segment_v2"
    shutil.copytree(ws.root / "prompts", variant)
    edited = (variant / "plan" / "segment.txt").read_text() + "Name every object by its colour.\n"
    (variant / "plan" / "segment.txt").write_text(edited)
    ws.run(prompts__dir=variant)
    asked = [r for r in ws.fake_requests() if r["kind"] == "segment"]
    assert len(asked) == 8  # 4 episodes, each asked again with the variant
    compared = scores(tmp_path, imported.gold, results, results.with_name("wgo_bench+segment_v2"))
    assert compared["comparison"]["segmentation_f1"] == {
        "a": 1.0, "b": 1.0, "difference": 0.0, "interval": [0.0, 0.0], "draws": 2000
    }  # fmt: skip
    # The command line prints the table.
    proc = subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "eval", "--gold", str(imported.gold),
         "--pred", str(results)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "1.000" in proc.stdout and "(exact-match lower bound)" in proc.stdout


def test_noised_oracle_gives_the_score_its_noise_implies(imported, tmp_path: Path):
    noise = Noise(merge_rate=0.5, swap_rate=1.0, seed=3)
    ws = Workspace(
        tmp_path / "ws",
        imported.dataset,
        vlm__fake__oracle=imported.gold,
        vlm__fake__oracle_merge_rate=noise.merge_rate,
        vlm__fake__oracle_swap_rate=noise.swap_rate,
        vlm__fake__oracle_seed=noise.seed,
        **PLAN_ONLY,
    )
    ws.run()
    truth = read_truth(imported.gold)
    said = {t.episode: [Segment(*s) for s in noised(t, noise)] for t in truth}
    gold = read_source(imported.gold).segments
    merges = sum(len(t.segments) - len(said[t.episode]) for t in truth)
    assert merges > 0  # seed 3 merges some neighbours
    expected = pooled(score_corpus(said, gold))
    report = scores(tmp_path, imported.gold, ws.root / "results" / "wgo_bench")
    written = report["predictions"][0]["views"]["written"]["overall"]
    assert written["predicted"] == 12 - merges
    assert (written["matched"], written["f1"]) == (expected["matched"], expected["f1"])
    assert written["f1"] < 1.0
    assert written["end_to_end_f1"] == 0.0  # every label swapped for a neighbour's


def test_ordinary_fake_scores_low_without_crashing(imported, tmp_path: Path):
    ws = Workspace(tmp_path / "ws", imported.dataset, **PLAN_ONLY)
    ws.run()
    report = scores(tmp_path, imported.gold, ws.root / "results" / "wgo_bench")
    written = report["predictions"][0]["views"]["written"]["overall"]
    assert written["gold"] == 12 and written["predicted"] > 0
    assert written["f1"] < 0.5
    assert written["end_to_end_f1"] == 0.0


def test_model_judge_asks_the_served_model_once_per_label_pair(imported, tmp_path: Path):
    gold = [json.loads(line) for line in imported.gold.read_text().splitlines()]
    for line in gold:  # the right spans, the first label reworded, the rest word for word
        line["segments"][0]["label"] = "Now " + line["segments"][0]["label"].upper()
        line["segments"][1]["label"] = line["segments"][1]["label"] + " please"
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps(line) + "\n" for line in gold))
    out = tmp_path / "scores.json"
    proc = subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "eval", "--gold", str(imported.gold),
         "--pred", str(pred), "--judge", "model", "--json", str(out),
         "--config", "vlm.backend=fake", f"vlm.api_base=http://127.0.0.1:{free_port()}/v1",
         "vlm.chat_template_kwargs={house_style: terse}", "vlm.reasoning_effort=low"],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "(model judge: Qwen/Qwen3.6-27B on the fake server)" in proc.stdout
    asked = [
        json.loads(line)
        for log in (tmp_path / ".episcribe" / "server").glob("fake_requests_*.jsonl")
        for line in log.read_text().splitlines()
    ]
    # "Now REACH FOR ..." normalises to "now reach for ...": not equal, so asked; 8 pairs.
    assert [r["kind"] for r in asked] == ["judge"] * 8
    assert all(r["n_images"] == 0 for r in asked)  # text only
    # The judge asks as a run would (the model's template settings), but deterministically.
    template = {"house_style": "terse", "enable_thinking": False}
    assert all(
        r["sampling"] == {"temperature": 0.0, "max_completion_tokens": 64,
                          "chat_template_kwargs": template, "reasoning_effort": "low"}
        for r in asked
    )  # fmt: skip
    server_dir = str(tmp_path / ".episcribe" / "server")
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if server_dir in " ".join(p.info["cmdline"] or [])
    ]
    assert not left  # eval started the server, so it stopped it
    written = json.loads(out.read_text())["predictions"][0]["views"]["written"]["overall"]
    assert written["f1"] == 1.0
    # The 12 - 8 = 4 labels given word for word are accepted without a call.
    assert 4 / 12 <= written["end_to_end_f1"] <= 1.0


@pytest.mark.parametrize(("swap", "accuracy"), [(0.0, 1.0), (1.0, 0.0)])
def test_label_gold_spans_gives_the_labeling_accuracy_of_the_oracle(
    imported, tmp_path: Path, swap, accuracy
):
    out = tmp_path / "scores.json"
    config = ["vlm.backend=fake", f"vlm.api_base=http://127.0.0.1:{free_port()}/v1"]
    config += [f"vlm.fake.oracle={imported.gold}", f"vlm.fake.oracle_swap_rate={swap}"]
    config += ["vlm.enable_thinking=true", "vlm.thinking_tokens=1000"]
    proc = subprocess.run(
        [sys.executable, "-m", "episcribe.command.cli", "eval", "--gold", str(imported.gold),
         "--pred", str(imported.gold), "--label-gold", str(imported.dataset),
         "--json", str(out), "--config", *config],
        cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())["labeling"]
    assert result["gold_segments"] == 12
    assert result["accuracy"] == accuracy
    assert f"labeling accuracy (the model labels the 12 gold spans): {accuracy:.3f}" in proc.stdout
    asked = [
        json.loads(line)
        for log in (tmp_path / ".episcribe" / "server").glob("fake_requests_*.jsonl")
        for line in log.read_text().splitlines()
    ]
    assert [r["kind"] for r in asked] == ["label_segment"] * 12
    assert all(r["n_images"] >= 1 for r in asked)  # the span's frames, as contact sheets
    # The model thinks first (the fake's <think> block), so the answer's budget has room.
    assert {r["sampling"]["max_completion_tokens"] for r in asked} == {128 + 1000}
    assert all(r["sampling"]["chat_template_kwargs"]["enable_thinking"] for r in asked)


def test_a_perfect_answer_on_a_long_episode_with_short_events_stays_perfect(tmp_path: Path):
    # 33.4 s with two subtasks of 2.0 s and 2.7 s at the end. The plan module's design
    # before issue 24 (1 fps, windows of 32 frames, at most 8 subtasks shared between the
    # windows by their length) merged e and f and scored 8/11; now the episode is one
    # request (80 frames at 2 fps fit plan.max_video_frames) with no cap, so nothing moves.
    gold = [(0.0, 17.5, "a"), (17.5, 23.3, "b"), (23.3, 25.3, "c"), (25.3, 28.7, "d"),
            (28.7, 31.4, "e"), (31.4, 33.4, "f")]  # fmt: skip
    labels = ["pick up the cup", "open the drawer", "put the cup in the drawer",
              "close the drawer", "wipe the table", "hang up the towel"]  # fmt: skip
    gold = [(a, b, labels[k]) for k, (a, b, _) in enumerate(gold)]
    done = import_wgo([write_wgo(tmp_path / "w.parquet", [Row("long", 33.4, gold)])], tmp_path)
    ws = Workspace(tmp_path / "ws", done.dataset, vlm__fake__oracle=done.gold, **PLAN_ONLY)
    ws.run()
    report = scores(tmp_path, done.gold, ws.root / "results" / "wgo_bench")
    views = report["predictions"][0]["views"]
    written = views["written"]["overall"]
    assert (written["gold"], written["predicted"], written["matched"]) == (6, 6, 6)
    assert written["f1"] == 1.0
    assert views["model"]["overall"]["matched"] == 6
