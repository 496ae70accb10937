"""Where a study lives: the Optuna storage a URL names, opened so that several processes can share it, and
the study itself (created, or resumed by name)."""

from __future__ import annotations

import os
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from huscf_lightning.engine.tracking import sqlite_path, store_lock

from .errors import SweepError
from .spec import SweepSpec

# ``journal:<file>`` names Optuna's journal storage on a file (appends under a file lock, for many processes).
JOURNAL_PREFIX = "journal:"
# Seconds a SQLite connection waits for another process's write before it fails (Python's default is 5).
SQLITE_TIMEOUT_S = 60


def in_memory(url: str | None) -> bool:
    """Whether the storage lives in one process's memory (no URL, or in-memory SQLite), so no other process sees it."""
    return url is None or (url.startswith("sqlite:") and sqlite_path(url) is None)


def storage_key(url: str | None) -> str:
    """One name per storage, whatever the spelling: a SQLite or journal file's absolute path, else the URL (an
    in-memory storage is this process's own)."""
    if in_memory(url):
        return f"memory:{os.getpid()}"
    if url.startswith(JOURNAL_PREFIX):
        return str(Path(url.removeprefix(JOURNAL_PREFIX)).resolve())
    path = sqlite_path(url)
    return str(path.resolve()) if path is not None else url


def open_storage(url: str | None) -> BaseStorage:
    """The storage ``url`` names. SQLite waits for other processes' writes instead of failing at once, and a
    SQLite file is opened under `store_lock`: processes starting together on a new file create its tables in turn."""
    try:
        if url is None:
            return InMemoryStorage()
        if url.startswith(JOURNAL_PREFIX):
            return JournalStorage(JournalFileBackend(url.removeprefix(JOURNAL_PREFIX)))
        if not url.startswith("sqlite:"):
            return RDBStorage(url)
        with store_lock(url):
            return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
    except Exception as err:  # a malformed URL, a missing folder or an unreachable database: one clear message
        raise SweepError(
            f"Cannot open the Optuna storage {url!r} ({type(err).__name__}: {err}). Give a database URL such as "
            f"sqlite:///optuna.db, or a journal file such as journal:optuna.log (--storage)."
        ) from err


def open_study(spec: SweepSpec, storage: BaseStorage) -> optuna.Study:
    """Create the study, or load it by name; its directions must match the spec's objectives."""
    try:
        existing = optuna.load_study(study_name=spec.study_name, storage=storage)
    except KeyError:
        existing = None
    if existing is not None:
        directions = [d.name.lower() for d in existing.directions]
        if directions != spec.directions:
            raise SweepError(
                f"Study {spec.study_name!r} in {spec.storage} optimises {directions}, but the spec's objectives "
                f"{list(spec.objectives)} need {spec.directions}. Use another study name (--study-name)."
            )
    return optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        directions=spec.directions,
        sampler=spec.make_sampler(),
        pruner=spec.make_pruner(),
        load_if_exists=True,
    )
