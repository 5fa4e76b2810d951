"""Preflight: a setup that would fail every job is one line, first, before any job.

Each case runs the installed `episcribe` command and checks that it exits non-zero with
one line naming the problem, and that it started nothing and wrote nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from smk import free_port
from test_cli import episcribe, fake_config
from test_fake_server import MODEL, run_fake


def refused(out, tmp_path: Path, *words: str) -> None:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("episcribe: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [], "preflight must start and write nothing"


def test_an_unreachable_endpoint_is_one_line_before_any_job(synth_small, tmp_path):
    base = f"http://127.0.0.1:{free_port()}/v1"
    out = episcribe(
        "--config", f"dataset.root={synth_small}", "vlm.backend=openai", f"vlm.api_base={base}",
        cwd=tmp_path,
    )  # fmt: skip
    refused(out, tmp_path, base, "does not answer")


def test_an_endpoint_serving_another_model_is_one_line(synth_small, tmp_path):
    server_dir = tmp_path.parent / f"{tmp_path.name}_server"
    server_dir.mkdir()
    with run_fake(server_dir) as (base, _log):
        out = episcribe(
            "--config", f"dataset.root={synth_small}", "vlm.backend=openai",
            f"vlm.api_base={base}", "vlm.model_id=other/model", cwd=tmp_path,
        )  # fmt: skip
    refused(out, tmp_path, MODEL, "'other/model'")


def test_vllm_not_installed_is_one_line(synth_small, tmp_path):
    path = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "vllm").exists()
    )
    from test_cli import env

    out = episcribe(
        "--config", f"dataset.root={synth_small}", f"vlm.api_base=http://127.0.0.1:{free_port()}/v1",
        cwd=tmp_path, env=env(PATH=path),
    )  # fmt: skip
    refused(out, tmp_path, "vllm", "not installed")


def test_a_missing_dataset_is_one_line(tmp_path):
    out = episcribe("--config", *fake_config(tmp_path / "nowhere"), cwd=tmp_path)
    refused(out, tmp_path, "nowhere")


def test_a_dry_run_needs_no_model_server(synth_small, tmp_path):
    base = f"http://127.0.0.1:{free_port()}/v1"
    out = episcribe(
        "--dry-run", "--config", f"dataset.root={synth_small}", "vlm.backend=openai",
        f"vlm.api_base={base}", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
