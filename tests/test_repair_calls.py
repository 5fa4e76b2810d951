"""An incomplete episode's re-run asks the model only for the calls that failed.

Run 1: VQA only, no retries, a fake server that faults every 20th call (HTTP 500 or a
held request that times out), so a few VQA calls fail and their episodes are staged
incomplete. Run 2, same settings: the server starts afresh, its first 19 calls answer
cleanly, and the model must be asked exactly once per call that failed in run 1.
"""

from __future__ import annotations

import json

from smk import Workspace

SETTINGS = dict(
    plan__enabled=False,
    interjections__enabled=False,
    vlm__max_retries=0,
    vlm__request_timeout_s=2,
    vlm__max_failed_call_share=1.0,
    vlm__fake__fault_rate=0.05,
)


def failed_calls(ws: Workspace) -> int:
    summaries = (ws.root / "results").rglob("jobs/annotate_vqa/*.summary.json")
    return sum(json.loads(p.read_text())["failures"] for p in summaries)


def test_a_rerun_asks_only_for_the_calls_that_failed(make_synth, tmp_path):
    dataset = make_synth(episodes=3, seconds=4.0, fps=10, episodes_per_file=3)
    ws = Workspace(tmp_path / "ws", dataset, **SETTINGS)
    ws.run()
    asked = len(ws.fake_requests())
    failed = failed_calls(ws)
    assert 1 <= failed < 19, f"{failed} failed calls of {asked}: the setup tests nothing"

    ws.run()
    repaired = len(ws.fake_requests()) - asked
    assert repaired == failed, f"{repaired} calls to repair {failed} failed ones"
    assert failed_calls(ws) == 0
    assert not list((ws.root / "results").rglob("cache/vqa/answers/episode_*"))
