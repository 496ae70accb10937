"""The fit parser as the sweep sees it: which dotted keys exist, how overrides become command-line
arguments, and whether the fit command would accept a set of values (checked before any trial)."""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from huscf_lightning.cli.lightning_cli import DEFAULT_CONFIG, HuSCFCLI, config_keys
from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.errors import HuSCFError
from huscf_lightning.split.ga import GaSettings

from .errors import SweepError

# Fit config keys that hold a free-form dict, with the settings class that defines (and checks) its sub-keys.
DICT_SETTINGS: dict[str, type] = {"model.plan.ga": GaSettings}
LOGGER_ARGS = "trainer.logger.init_args"


class _ConfigOnlyCLI(HuSCFCLI):
    """The fit CLI stopped after parsing: no model, data or trainer is built."""

    def instantiate_classes(self) -> None:
        """Nothing to build: the sweep only checks keys and values."""


def format_value(value: Any) -> str:
    """A command-line value: strings as written (YAML text such as ``[1, 2]`` stays parseable), others as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


class FitConfig:
    """The fit parser with the sweep's base config: knows every valid key and parses overrides."""

    def __init__(self, base_config: str | None) -> None:
        self.base_args = ["--config", base_config] if base_config else []
        try:
            cli = _ConfigOnlyCLI(
                HuSCFGAN,
                HuSCFDataModule,
                args=self.base_args,
                run=False,
                parser_kwargs={
                    "default_config_files": [DEFAULT_CONFIG],
                    "parser_mode": "omegaconf",
                    "exit_on_error": False,  # a rejected value raises, so the sweep can name it
                },
                auto_configure_optimizers=False,
            )
        except argparse.ArgumentError as err:
            raise SweepError(f"The sweep's base_config {base_config!r} is not a valid fit config: {err}") from err
        self.parser = cli.parser
        self.base = cli.config

    def known_paths(self) -> list[str]:
        """Every settable dotted key: the parser's keys, their parent groups, and the sub-keys of dict settings."""
        subkeys = [f"{key}.{f.name}" for key, settings in DICT_SETTINGS.items() for f in fields(settings)]
        return sorted({*config_keys(self.base), *subkeys})

    def check_paths(self, paths: Sequence[str], where: str) -> None:
        """Raise a `SweepError` naming each unknown key and its close matches."""
        known = self.known_paths()
        unknown = [p for p in paths if p not in known]
        if unknown:
            close = {p: difflib.get_close_matches(p, known, n=3, cutoff=0.6) or "none" for p in unknown}
            hints = "; ".join(f"{p!r} (close: {matches})" for p, matches in close.items())
            raise SweepError(
                f"{where} names fit config key(s) that do not exist: {hints}. Use dotted fit keys as in "
                f"`python -m huscf_lightning fit --print_config` (e.g. model.federation.k)."
            )

    def arguments(self, overrides: Mapping[str, Any]) -> list[str]:
        """Command-line overrides; sub-keys of dict settings are merged into one value with the config's."""
        merged = dict(overrides)
        for key in DICT_SETTINGS:
            subkeys = {p[len(key) + 1:]: merged.pop(p) for p in list(merged) if p.startswith(f"{key}.")}
            if subkeys:
                value = dict(merged.pop(key, None) or self.base.get(key) or {})
                merged[key] = {**value, **subkeys}
        return [f"--{path}={format_value(value)}" for path, value in merged.items()]

    def parse(self, overrides: Mapping[str, Any], where: str) -> Namespace:
        """The resolved config with these overrides; a clear error when the fit parser rejects a value."""
        try:
            config = self.parser.parse_args([*self.base_args, *self.arguments(overrides)])
        except argparse.ArgumentError as err:
            raise SweepError(f"{where}: the fit parser rejects {dict(overrides)}: {err}") from err
        for key, settings in DICT_SETTINGS.items():
            try:
                settings.from_mapping(config[key])
            except ValueError as err:
                raise SweepError(f"{where}: {key} would be {config[key]}, which is invalid: {err}") from err
        return config


def resolve_base_config(base: str | None, folder: Path | None, where: str, error: type[HuSCFError]) -> str | None:
    """A spec's ``base_config`` as a path (a relative one is taken from the spec's folder); a missing file is
    an ``error`` naming it. Sweep and comparison specs share it."""
    if base is None:
        return None
    path = Path(base) if folder is None or Path(base).is_absolute() else folder / base
    if not path.is_file():
        raise error(f"{where}: base_config {str(path)!r} is not a file (a relative path is taken from the spec's folder).")
    return str(path)


def mlflow_destination(
    config: Namespace, tracking_uri: str | None, experiment_name: str | None, records: str, error: type[HuSCFError]
) -> tuple[str, str]:
    """The tracking URI and experiment a spec's runs go to: the spec's own, else the fit config's MLflow logger.
    ``records`` opens the error when the fit config logs elsewhere (e.g. "Sweeps record every trial")."""
    logger = config["trainer.logger"]
    if not (hasattr(logger, "class_path") and logger.class_path.endswith("MLFlowLogger")):
        raise error(
            f"{records} in MLflow, but the fit config's trainer.logger is {logger!r}. Use "
            f"lightning.pytorch.loggers.MLFlowLogger (the packaged default does)."
        )
    uri = tracking_uri or config[f"{LOGGER_ARGS}.tracking_uri"]
    if not uri:
        raise error("No MLflow tracking URI: set trainer.logger.init_args.tracking_uri or pass --tracking-uri.")
    return uri, experiment_name or config[f"{LOGGER_ARGS}.experiment_name"]
