"""ensure() and stop(): reuse, start or stop the run's server, one caller at a time."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from episcribe import config
from episcribe.errors import ServerError
from episcribe.vlm.server.launchers import STOP_GRACE_S, for_record, for_settings
from episcribe.vlm.server.probe import answers, check_serves, read_json

log = logging.getLogger(__name__)


def ensure(settings: dict, run_dir: str | os.PathLike) -> list[str]:
    """Base URLs (ending in /v1) of a healthy server for ``settings`` (the vlm section)."""
    backend, api_base = settings["backend"], settings.get("api_base") or ""
    api_key = config.api_key(settings)
    if backend == "openai":
        if answers(api_base, api_key):
            check_serves(api_base, settings)
            return [api_base]
        raise ServerError(
            f"vlm.api_base {api_base} does not answer (GET {api_base.rstrip('/')}/models): "
            "check that the server runs and is reachable from this host, that the URL ends "
            "in /v1, and the API key (in the variable vlm.api_key_env names); or set "
            "vlm.backend to vllm to start one"
        )
    if backend not in ("vllm", "fake"):
        raise ServerError(f"vlm.backend {backend!r} is not one of vllm, openai, fake")
    if api_base and answers(api_base, api_key):
        check_serves(api_base, settings)
        log.info("using the server that already answers at %s", api_base)
        return [api_base]
    launcher = for_settings(settings)
    launcher.preflight(settings)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _locked(run_dir, launcher.lock_timeout(settings)):
        launcher.register_client(run_dir)
        state = read_json(run_dir / "server.json")
        if state and for_record(state).running(state):
            same = (state["model_id"], state["backend"]) == (settings["model_id"], backend)
            same = same and launcher.same_owner(state)
            if same and all(answers(url) for url in state["urls"]):
                return state["urls"]
            if not same and launcher.other_live_owner(state):
                raise ServerError(
                    f"{run_dir} holds a {state['backend']} server for {state['model_id']!r} "
                    f"owned by another running workflow (pid {state.get('owner_pid')}); wait "
                    "for it, stop it with `python -m episcribe.vlm.server stop --run-dir "
                    f"{run_dir}`, or run from another directory"
                )
            log.warning("replacing the server recorded in %s/server.json", run_dir)
            stop(run_dir)
        elif (sup := read_json(run_dir / "supervisor.json")) and for_record(sup).running(sup):
            # A start whose caller died while waiting: let it finish instead of starting again.
            return for_record(sup).wait_ready(settings, run_dir, sup)
        return launcher.start(settings, run_dir)


def stop(run_dir: str | os.PathLike, grace_s: float = STOP_GRACE_S) -> bool:
    """Stop the run's server, if any; True if a live supervisor was stopped."""
    run_dir = Path(run_dir)
    state = read_json(run_dir / "server.json") or {}
    sup = read_json(run_dir / "supervisor.json") or state
    return for_record(sup).stop(run_dir, sup, state, grace_s)


@contextmanager
def _locked(run_dir: Path, timeout_s: float) -> Iterator[None]:
    path = run_dir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ServerError(
                        f"another process has held {path} for {timeout_s:g} s while starting "
                        f"the model server; see {run_dir / 'supervisor.log'}"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
