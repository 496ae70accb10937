"""The two locks that let several sweep processes share one study on one machine: one that serialises
opening a session, claiming a trial and closing, and one that every taking-part process holds shared,
so that a process which gets it alone knows no other is running. The kernel drops both when a process
dies, so a killed worker never blocks the others."""

from __future__ import annotations

import fcntl
import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


class StudyLocks:
    """Lock files for one study of one storage, in the system temp folder (picklable: only the paths)."""

    def __init__(self, storage_key: str, study_name: str) -> None:
        key = hashlib.sha1(f"{storage_key}\n{study_name}".encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir())
        self.claim_path = folder / f"huscf-sweep-{key}.lock"
        self.live_path = folder / f"huscf-sweep-{key}.live"
        self._live: IO | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_live": None}  # a process's part is its own

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the study's exclusive lock: one process at a time opens, claims a trial or closes."""
        with self.claim_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def join(self) -> bool:
        """Take part in the study's session (under `claim`); True when no other process takes part."""
        self._live = self.live_path.open("a")
        alone = _try_exclusive(self._live)
        fcntl.flock(self._live, fcntl.LOCK_SH)  # not atomic after an exclusive lock, but others join only under claim
        return alone

    def leave(self) -> bool:
        """Stop taking part (under `claim`); True when this process was the last one."""
        if self._live is None:
            return False
        fcntl.flock(self._live, fcntl.LOCK_UN)
        last = _try_exclusive(self._live)
        self._live.close()
        self._live = None
        return last


def _try_exclusive(handle: IO) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
