"""A run-wide cap on model requests in flight, shared by every process of the run.

``vlm.client_concurrency`` bounds the requests in flight across the whole run, but
Snakemake runs several annotate jobs at once, each with its own client. An in-process
semaphore cannot see the other jobs, so the bound is a pool of ``size`` lock files
(``run_dir/slots/slot_{i}.lock``): a request holds an exclusive ``flock`` on one of them
while it is in flight. The kernel drops a lock when its process dies, however it dies,
so a killed job never leaks a slot and there is nothing to clean up. Acquiring a free
slot costs a few microseconds (one non-blocking ``flock``); when all are taken the
caller sleeps ~5 ms and tries again.

Keep ``run_dir`` on a local filesystem: ``flock`` is unreliable on some network ones.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
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
        while True:
            i = self.try_acquire()
            if i is not None:
                return i
            await asyncio.sleep(POLL_S)

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
