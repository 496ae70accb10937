"""The IDX file format of MNIST and its family: unsigned-byte arrays behind a big-endian header."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from huscf_lightning.data.registry import DomainError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
UNSIGNED_BYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz; a clear error for a broken archive."""
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DomainError(
            f"{path} is not a readable gzip archive ({type(error).__name__}: {error}); an IDX file named .gz "
            f"must be the gzip-compressed original, so download or copy it again (or drop the .gz suffix if "
            f"it is an uncompressed IDX file)."
        ) from error


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (the MNIST format), gzipped when its name ends in .gz."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != UNSIGNED_BYTE:
        found = raw[:4].hex(" ") or "nothing (the file is empty)"
        raise DomainError(
            f"{path} is not an unsigned-byte IDX file: it must start with the magic bytes 00 00 08 <ndim> "
            f"but starts with {found}; replace it with the original MNIST-format file."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DomainError(
            f"{path} is truncated inside its header ({len(raw)} bytes, {header} expected for {ndim} dimensions); "
            f"download or copy the file again."
        )
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise DomainError(
            f"{path} is truncated or corrupt: its header says shape {shape} ({math.prod(shape)} bytes) "
            f"but it holds {len(raw) - header}; download or copy the file again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def idx_file(folder: Path, stem: str) -> Path | None:
    """The path of ``stem.gz`` or ``stem`` in ``folder`` (the .gz first), or None if neither exists."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def require_idx_file(folder: Path, stem: str, how_to_get: str) -> Path:
    """The path of ``stem`` or ``stem.gz`` in ``folder``; a clear error naming it if neither exists."""
    path = idx_file(folder, stem)
    if path is None:
        raise DomainError(f"Missing data file {folder / stem}.gz (or uncompressed {stem}). {how_to_get}")
    return path
