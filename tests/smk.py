"""Run the real workflow as a `snakemake` subprocess in a throw-away copy of the repo.

Each workspace is a copy of the workflow files (Snakefile, rules, scripts, prompts,
schemas, profiles), so a test can edit a prompt without touching the repository. The
package itself is the installed one. Jobs run are read from snakemake's own output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = (
    "Snakefile",
    "config.yaml",
    "rules",
    "scripts",
    "prompts",
    "schemas",
    "profiles",
    "report",
    "envs",
)
RULE_LINE = re.compile(r"^(?:local)?rule (\S+):$", re.MULTILINE)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Run:
    returncode: int
    output: str

    @property
    def rules(self) -> list[str]:
        """Rules of the jobs snakemake executed, in order, as it printed them."""
        return RULE_LINE.findall(self.output)

    def modules_run(self) -> set[str]:
        """Rule names without their shard suffix: annotate_vqa_e1 -> annotate_vqa."""
        return {re.sub(r"_[es]\d+$", "", r) for r in self.rules}


class Workspace:
    def __init__(self, root: Path, dataset: Path, env: dict | None = None, **config):
        self.root = root
        self.env = dict(env or {})  # on top of the environment at each run
        root.mkdir(parents=True, exist_ok=True)
        for name in WORKFLOW_FILES:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, root / name)
            else:
                shutil.copy2(src, root / name)
        self.config = {
            "dataset__root": str(dataset),
            "vlm__backend": "fake",
            # Nothing listens here, so the run starts its own fake server.
            "vlm__api_base": f"http://127.0.0.1:{free_port()}/v1",
            **config,
        }

    def environment(self) -> dict:
        """What a process of this workspace runs with: the environment now, plus its own."""
        return {**_clean_env(), **self.env}

    @property
    def server_dir(self) -> Path:
        return self.root / ".episcribe" / "server"

    def command(self, *args: str, **config) -> list[str]:
        merged = {**self.config, **config}
        entries = [f"{k}={_cli_value(v)}" for k, v in merged.items()]
        return [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--config", *entries]

    def run(self, *args: str, check: bool = True, timeout: float = 600, **config) -> Run:
        proc = subprocess.run(
            self.command(*args, **config),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(),
        )
        run = Run(proc.returncode, proc.stdout + proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake failed ({proc.returncode}):\n{run.output[-6000:]}")
        return run

    def start(self, *args: str, **config) -> subprocess.Popen:
        """Start snakemake in its own session (so a signal reaches it like a Ctrl-C would)."""
        return subprocess.Popen(
            self.command(*args, **config),
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=self.environment(),
        )

    def staging(self, name: str) -> dict[str, str]:
        """Every staging file's text, keyed by its path below staging/."""
        base = self.root / "results" / name / "staging"
        return {str(p.relative_to(base)): p.read_text() for p in sorted(base.rglob("*.jsonl"))}

    def fake_requests(self) -> list[dict]:
        rows = []
        for log in sorted(self.server_dir.glob("fake_requests_*.jsonl")):
            rows += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return rows

    def server_processes(self) -> list[psutil.Process]:
        """Live processes started for this workspace's model server."""
        marker = str(self.server_dir)
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if any(marker in part for part in proc.info["cmdline"] or []):
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def wait_no_server(self, timeout: float = 15) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = self.server_processes()
            if not left:
                return []
            time.sleep(0.2)
        return self.server_processes()


def terminate(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> str:
    os.killpg(proc.pid, sig)
    out, _ = proc.communicate(timeout=timeout)
    return out


def _cli_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _clean_env() -> dict:
    env = dict(os.environ)
    env.pop("EPISCRIBE_OWNER_PID", None)
    return env
