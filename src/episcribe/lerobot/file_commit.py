"""Replace many files of a dataset as one change: all new, or (after a crash) finished.

Each file being atomic is not enough for a dataset: a reader between the first and the
last rename sees new shards beside old ones and an old ``info.json``. A
:class:`FileCommit` lets the writer build every new file as a pending sibling first
(the long part), then :meth:`FileCommit.apply` writes a marker listing the renames, does
them all in one short phase (``meta/info.json`` last, as its caller orders them) and
removes the marker.

A run killed during that phase leaves the marker; every pending file it names was
complete and on disk before the marker was written, so :func:`finish_interrupted` rolls
the commit forward. A run killed before it (no marker) leaves pending files that are
only discarded. Either way the next write, and ``episcribe`` at start, call it first;
files and markers of a writer that still runs (another run's) are left alone.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import psutil

from episcribe.atomic import write_json

MARKER = ".episcribe-write-pending.json"
_PENDING = re.compile(r"^\..+\.pending-(\d+)-[0-9a-f]{8}$")


class FileCommit:
    """Pending files under ``root`` and the targets they replace, in commit order."""

    def __init__(self, root: Path):
        self.root = Path(root)
        # The writer's pid: a write still in progress (another run's) is left alone.
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.renames: list[tuple[Path, Path]] = []

    def pending(self, target: Path) -> Path:
        """Where to write the new ``target``; renamed onto it by :meth:`apply`."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        path = target.with_name(f".{target.name}.pending-{self.id}")
        self.renames.append((path, target))
        return path

    def apply(self) -> None:
        """Make every pending file durable, record the renames, do them, forget them."""
        for path, _ in self.renames:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        root = self.root
        relative = [[str(p.relative_to(root)), str(t.relative_to(root))] for p, t in self.renames]
        write_json(self.root / MARKER, {"pid": os.getpid(), "renames": relative})
        _rename_all(self.root, self.renames)
        (self.root / MARKER).unlink()

    def discard(self) -> None:
        """Remove the pending files: the write failed before its commit."""
        for path, _ in self.renames:
            path.unlink(missing_ok=True)


def finish_interrupted(root: Path) -> str | None:
    """Roll forward a commit killed mid-rename, or discard the pending files of a write
    killed before its commit; say what was done (None: nothing was left)."""
    root = Path(root)
    marker = root / MARKER
    if marker.is_file():
        record = json.loads(marker.read_text())
        if psutil.pid_exists(record["pid"]) and record["pid"] != os.getpid():
            return None  # its writer is still at work
        renames = [(root / p, root / t) for p, t in record["renames"]]
        left = sum(p.exists() for p, _ in renames)
        _rename_all(root, renames)
        marker.unlink()
        return (
            f"the previous write of {root} was interrupted while putting its files in "
            f"place; its {left} remaining file(s) of {len(renames)} were put in place now, "
            "so the dataset is whole again"
        )
    if not root.is_dir():
        return None
    discarded = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            match = _PENDING.match(name)
            if match and not psutil.pid_exists(int(match.group(1))):
                (Path(dirpath) / name).unlink(missing_ok=True)
                discarded += 1
    if not discarded:
        return None
    return (
        f"the previous write of {root} was interrupted before it changed any file; its "
        f"{discarded} unfinished file(s) were removed"
    )


def _rename_all(root: Path, renames: list[tuple[Path, Path]]) -> None:
    directories = set()
    for path, target in renames:
        if path.exists():  # absent: renamed before an interruption
            os.replace(path, target)
            directories.add(target.parent)
    for directory in directories:  # the renames themselves survive a power cut
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
