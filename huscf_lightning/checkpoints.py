"""Reading a run's checkpoint with a clear error when it is missing, corrupt or not ours."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from huscf_lightning.config import ConfigError


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
