"""Logging for job scripts: everything goes to the job's ``log:`` file, one line to stderr.

Scripts call :func:`script_main`, which points the stdlib logging tree at
``snakemake.log[0]`` and turns a :class:`~episcribe.errors.UserError` into a one-line
failure (the message names the file, episode or key and the fix) instead of a traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from episcribe.errors import UserError

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(log_path: str | Path | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = []
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(level=level, format=FORMAT, handlers=handlers, force=True)
    # The HTTP stack logs every request at INFO; our client logs what matters.
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def script_main(smk: Any, main: Callable[[Any], None]) -> None:
    """Run ``main(snakemake)`` with logging set up; exit 1 with one line on a UserError."""
    log_path = smk.log[0] if len(smk.log) else None
    setup(log_path)
    try:
        main(smk)
    except UserError as exc:
        logging.getLogger("episcribe").error("%s", exc)
        print(f"episcribe error ({smk.rule}): {exc}", file=sys.stderr)
        sys.exit(1)
