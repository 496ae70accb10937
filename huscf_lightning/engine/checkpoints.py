"""Checkpoints of a run: written atomically at every round end, read back with a clear error when unusable."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from huscf_lightning.compat import save_last_checkpoint
from huscf_lightning.errors import ConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its target, syncs it to disk, then renames it over the target.

    A process killed during the write leaves the previous checkpoint whole (a rename within one folder is
    atomic). Lightning's own writer stages the file in the system temp folder and moves it, which is a copy,
    not a rename, when that folder is on another filesystem, and it never syncs.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class RoundCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every round, the unit a run resumes from.

    Lightning's ModelCheckpoint writes ``last.ckpt`` only right after it saved a kept (top-k) checkpoint,
    so with ``save_top_k=0`` it never does. This one writes it whenever a round ends (the last of the
    model's ``local_epochs`` epochs). Lightning runs checkpoint callbacks after every other callback's
    ``on_train_epoch_end``, so the file holds the round's aggregated weights and round records.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(save_last=True, save_top_k=0, **kwargs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        round_end = getattr(pl_module, "is_round_end", lambda _: True)(trainer)
        if round_end:
            save_last_checkpoint(self, trainer)


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, or a `ConfigError` naming the file and what to do instead."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No checkpoint at {path}. Pass the path of a run's last.ckpt (printed at the end of fit).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as err:
        raise ConfigError(
            f"The checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is corrupt or truncated. "
            f"Use the run's last.ckpt from its MLflow artifacts, or start the run again without --ckpt_path."
        ) from err
    if not isinstance(checkpoint, dict) or "huscf" not in checkpoint:
        raise ConfigError(
            f"{path} is not a checkpoint of a huscf_lightning run (no 'huscf' section); resume or evaluate only "
            f"checkpoints written by `huscf_lightning fit`."
        )
    return checkpoint
