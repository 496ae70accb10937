"""The package's one error base: every error a user can cause is a `HuSCFError` whose message is one
paragraph naming the problem and the fix, so the CLI prints it as it is, without a traceback."""

from __future__ import annotations


class HuSCFError(Exception):
    """Base of every huscf_lightning error; the CLI prints its message and exits with status 2."""


class ConfigError(HuSCFError, ValueError):
    """A configuration value that cannot be run; the message names the fix."""
