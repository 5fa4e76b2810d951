"""A job's stop: a stop signal cancels its model calls at once, and starts none after.

A model call can wait up to ``vlm.request_timeout_s`` on a stuck server, and a failed one
is retried after a backoff; a job that let them run would outlive the scheduler's grace
period (SLURM: 30 s from SIGTERM to SIGKILL). :func:`run_until_stopped` runs the job's
coroutine with SIGTERM, SIGINT and SIGHUP cancelling it: every awaited HTTP request and
backoff sleep ends with ``CancelledError``, so no request starts after the signal.
Episodes finished before it are already cached and staged; the rest are resumable.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from episcribe.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
T = TypeVar("T")


class Stopped(UserError):
    """The job was told to stop; what it finished is kept."""


def run_until_stopped(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``; a stop signal cancels it and raises :class:`Stopped`."""
    return asyncio.run(_guarded(main))


async def _guarded(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(number: int) -> None:
        if not received:  # a second signal (to the job and to its group) changes nothing
            received.append(number)
            task.cancel()

    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, on_signal, number)
    try:
        return await main
    except asyncio.CancelledError:
        if not received:
            raise
        raise Stopped(
            f"stopped by {signal.Signals(received[0]).name}: its model calls were cancelled; "
            "finished episodes are kept and the rest are annotated when the run resumes"
        ) from None
    finally:
        for number in STOP_SIGNALS:
            loop.remove_signal_handler(number)
