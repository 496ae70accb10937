"""The sweep's two errors: a spec that cannot run, and a trial that produced no objective values."""

from __future__ import annotations

from huscf_lightning.errors import HuSCFError


class SweepError(HuSCFError, ValueError):
    """A sweep that cannot run as specified; the message names the problem and the fix."""


class TrialError(HuSCFError, RuntimeError):
    """One trial could not produce its objective values; the study records it as failed and goes on."""
