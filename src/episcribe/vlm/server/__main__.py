"""The CLI, for the Snakefile hooks, shells, and the supervisor itself (``supervise``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from episcribe.errors import ServerError
from episcribe.vlm.server.lifecycle import ensure, stop
from episcribe.vlm.server.owner import HEARTBEAT_STALE_S, Freshness, Watch
from episcribe.vlm.server.supervisor import supervise

log = logging.getLogger(__name__)


def _json_arg(raw: str) -> dict:
    """--settings-json: JSON text, or @file (the SLURM launcher keeps it off the command line)."""
    text = Path(raw[1:]).read_text(encoding="utf-8") if raw.startswith("@") else raw
    return json.loads(text)


def _settings(raw: str) -> dict:
    """Settings with the config schema's defaults filled in."""
    from episcribe.config import resolve  # jsonschema: an import the supervisor need not pay for

    return resolve({"vlm": _json_arg(raw)})["vlm"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m episcribe.vlm.server")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("ensure", "stop", "supervise"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--run-dir", required=True, type=Path)
        if name != "stop":
            cmd.add_argument("--settings-json", default="{}", help="vlm settings: JSON or @file")
        if name == "supervise":
            cmd.add_argument("--owner-pid", type=int, default=None)
            cmd.add_argument("--owner-start", type=int, default=None)
            cmd.add_argument(
                "--cross-node",
                action="store_true",
                help="bind 0.0.0.0, publish this host's name, and see the owner and clients "
                "by heartbeat files (the supervisor runs as a SLURM job)",
            )
            cmd.add_argument("--owner-heartbeat", type=Path, default=None)
            cmd.add_argument("--heartbeat-stale-s", type=float, default=HEARTBEAT_STALE_S)
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        if args.command == "supervise":
            settings = _json_arg(args.settings_json)
            if args.cross_node:
                watch = Watch(
                    owner_heartbeat=args.owner_heartbeat,
                    owner_pid=args.owner_pid,
                    beats=Freshness(args.heartbeat_stale_s),
                )
                code = supervise(settings, args.run_dir, watch, bind="0.0.0.0")
            else:
                owner = (args.owner_pid, args.owner_start)
                code = supervise(settings, args.run_dir, owner)
            log.info("supervisor %d exited with code %d", os.getpid(), code)
            return code
        if args.command == "stop":
            stop(args.run_dir)
            return 0
        print("\n".join(ensure(_settings(args.settings_json), args.run_dir)))
        return 0
    except ServerError as exc:
        print(f"episcribe: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
