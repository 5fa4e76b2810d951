"""A run-wide cap on model requests in flight, shared by every process of the run.

``vlm.client_concurrency`` bounds the requests in flight across the whole run, but
Snakemake runs several annotate jobs at once, each with its own client. An in-process
semaphore cannot see the other jobs, so the bound is a pool of ``size`` lock files
(``run_dir/slots/slot_{i}.lock``): a request holds an exclusive ``flock`` on one of them
while it is in flight. The kernel drops a lock when its process dies, however it dies,
so a killed job never leaks a slot and there is nothing to clean up. Acquiring a free
slot costs a few microseconds (one non-blocking ``flock``). When all are taken, the
caller queues inside its process (first come, first served) and one poller per process
and event loop tries the locks every ~5 ms for the whole queue: however many requests
wait, a process polls at the same rate, where a poll per waiter and 5 ms would burn a
core with a few hundred waiters. A slot released in this process is not handed straight
to the next local waiter: it goes back to the pool, so a process with a long queue
cannot starve the other jobs.

Keep ``run_dir`` on a local filesystem: ``flock`` is unreliable on some network ones.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

POLL_S = 0.005


class SlotPool:
    """``async with pool.slot():`` holds one of ``size`` run-wide slots."""

    def __init__(self, run_dir: str | os.PathLike, size: int):
        if size < 1:
            raise ValueError(f"slot pool size must be >= 1, got {size}")
        self.dir = Path(run_dir) / "slots"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self._fds: list[int | None] = [None] * size
        self._held: set[int] = set()  # flock is per open file: track our own holders
        self._next = os.getpid() % size  # processes start their scans at different slots
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._poller: asyncio.Task | None = None

    def try_acquire(self) -> int | None:
        """Take a free slot without waiting; return its index, or None when all are busy."""
        for k in range(self.size):
            i = (self._next + k) % self.size
            if i in self._held:
                continue
            fd = self._fds[i]
            if fd is None:
                path = self.dir / f"slot_{i}.lock"
                fd = self._fds[i] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            self._held.add(i)
            self._next = (i + 1) % self.size
            return i
        return None

    def release(self, i: int) -> None:
        self._held.discard(i)
        fd = self._fds[i]
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    async def acquire(self) -> int:
        if not self._waiters:  # queued requests go first
            i = self.try_acquire()
            if i is not None:
                return i
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._waiters.append(waiter)
        if self._poller is None or self._poller.done() or self._poller.get_loop() is not loop:
            self._poller = loop.create_task(self._poll())
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # granted just as the caller was cancelled
            raise

    async def _poll(self) -> None:
        """Grant slots to the queued waiters, in order, until none is left."""
        while True:
            while self._waiters and self._waiters[0].done():
                self._waiters.popleft()  # cancelled while queued
            if not self._waiters:
                return
            try:
                i = self.try_acquire()
            except OSError as exc:  # the slot files cannot be opened: fail the queue
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.done():
                        waiter.set_exception(exc)
                return
            if i is None:
                await asyncio.sleep(POLL_S)
                continue
            self._waiters.popleft().set_result(i)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[int]:
        i = await self.acquire()
        try:
            yield i
        finally:
            self.release(i)

    def close(self) -> None:
        for i, fd in enumerate(self._fds):
            if fd is not None:
                os.close(fd)  # also drops any lock still held
                self._fds[i] = None
        self._held.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
