"""The LightningCLI of huscf_lightning: packaged defaults, rounds -> epochs, MLflow config record."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import warnings
from importlib.resources import files
from typing import NoReturn

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from huscf_lightning.checkpoints import read_checkpoint
from huscf_lightning.config import ConfigError
from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.module import HuSCFGAN
from huscf_lightning.tracking import check_tracking_uri, log_text, mlflow_logger

DEFAULT_CONFIG = str(files("huscf_lightning.configs") / "default.yaml")


def config_keys(config: object) -> list[str]:
    """Every dotted key of a parsed fit config (a jsonargparse Namespace): its leaves and their parent groups."""
    leaves = [k for k in config.keys() if k != "config"]
    groups = {leaf.rsplit(".", i)[0] for leaf in leaves for i in range(1, leaf.count(".") + 1)}
    return sorted({*leaves, *groups})


_UNKNOWN_KEY_PATTERNS = (
    re.compile(r"unrecognized arguments: (.*)"),  # on the command line: --model.roundz=2
    re.compile(r"does not accept option '([^']+)'"),  # in a config file
    re.compile(r"Option '([^']+)' is not accepted"),  # inside a section such as model.federation
)


def _unknown_keys(message: str) -> list[str]:
    """The keys a jsonargparse error message says are unknown."""
    found = []
    for pattern in _UNKNOWN_KEY_PATTERNS:
        for match in pattern.findall(message):
            found += [token.split("=", 1)[0].lstrip("-") for token in match.split() if not token.startswith("=")]
    return [key for key in dict.fromkeys(found) if key]


def _innermost_problem(message: str) -> str:
    """One sentence from a jsonargparse value error: for a section such as ``model.federation`` (a union of
    a settings class and None), the key inside it and what it expected, not the whole union report."""
    outer = re.match(r'Parser key "([^"]+)"', message)
    inner = re.search(r'Problem with given class_path [^:]+:\s*Parser key "([^"]+)":\s*(Expected .*?Got value: \S+)', message, re.S)
    if outer and inner:
        return f"{outer.group(1)}.{inner.group(1)}: {' '.join(inner.group(2).split())}."
    text = " ".join(message.split())
    return text if text.endswith(".") else f"{text}."


class HuSCFArgumentParser(LightningArgumentParser):
    """The fit parser, whose errors are one paragraph naming the bad key (with close matches) and the fix,
    instead of a usage listing of every option followed by the message."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # programmatic parsing (the sweep's checks) wants the exception
            super().error(message, ex)
        unknown = _unknown_keys(message)
        if unknown:
            known = self._known_keys()
            hints = []
            for key in unknown:
                leaf = key.rsplit(".", 1)[-1]
                close = difflib.get_close_matches(key, known, n=3, cutoff=0.6) or [
                    k for k in known if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]], cutoff=0.75)
                ][:3]
                hints.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
            text = f"unknown config key(s) {'; '.join(hints)}."
        else:
            text = _innermost_problem(message)
        sys.stderr.write(
            f"error: {text} See every key and its current value with `python -m huscf_lightning fit --print_config`, "
            f"and the options with `python -m huscf_lightning fit --help`.\n"
        )
        sys.exit(2)

    def _known_keys(self) -> list[str]:
        """The fit config's keys, for close-match hints (empty when the defaults themselves do not parse).

        The top-level parser knows only ``subcommand``: the keys come from its subcommand parsers.
        """
        parsers = [self] + [
            sub for action in self._actions if isinstance(action, argparse._SubParsersAction) for sub in action.choices.values()
        ]
        keys: set[str] = set()
        for parser in parsers:
            try:
                keys.update(config_keys(parser.get_defaults()))
            except Exception:  # noqa: BLE001 - only a hint: a broken default config gets its own error elsewhere
                continue
        return sorted(
            {k.replace(".init_args", "") for k in keys if k != "subcommand" and not k.endswith(".class_path")}
        )


class MLflowSaveConfig(SaveConfigCallback):
    """Records the full resolved config in the run: as params and as a ``config.yaml`` artifact."""

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        logger.log_hyperparams({"config": self.config.as_dict()})
        log_text(trainer, self.parser.dump(self.config, skip_none=False), "config.yaml")


class HuSCFCLI(LightningCLI):
    """LightningCLI whose trainer length and checkpoint cadence follow the model's rounds."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Only ``fit``: HuSCFGAN has no validation/test loop (``huscf_lightning evaluate`` tests a checkpoint)."""
        return {"fit": LightningCLI.subcommands()["fit"]}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """One seed for the model (plan, noise) and the data (partition, shuffling)."""
        parser.link_arguments("seed_everything", "model.seed")
        parser.link_arguments("seed_everything", "data.seed")

    def before_instantiate_classes(self) -> None:
        """The training length is the model's rounds; check the tracking server before anything is built."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        epochs = config.model.rounds * config.model.local_epochs
        if config.trainer.max_epochs not in (None, epochs):
            raise ConfigError(
                f"trainer.max_epochs={config.trainer.max_epochs} is set, but a run's length is model.rounds x "
                f"model.local_epochs (= {epochs} here); drop trainer.max_epochs and set --model.rounds instead."
            )
        config.trainer.max_epochs = epochs
        logger = config.trainer.logger
        uri = getattr(getattr(logger, "init_args", None), "tracking_uri", None)
        if uri:
            check_tracking_uri(uri)

    def before_fit(self) -> None:
        """Save ``last.ckpt`` at every round end (a round is the unit of resumption) unless the config sets a
        checkpoint callback; Lightning's own default (every epoch) is replaced, the caller's are kept."""
        configured = self.config[self.subcommand].trainer.callbacks or []
        if not any("ModelCheckpoint" in str(getattr(c, "class_path", "")) for c in configured):
            given = [c for c in (self.trainer_defaults or {}).get("callbacks", []) if isinstance(c, ModelCheckpoint)]
            others = [c for c in self.trainer.callbacks if not isinstance(c, ModelCheckpoint)]
            per_round = ModelCheckpoint(every_n_epochs=self.model.local_epochs, save_last=True, save_top_k=0)
            self.trainer.callbacks = [*others, per_round, *given]

    def after_fit(self) -> None:
        logger = mlflow_logger(self.trainer)
        print(f"\nTrained {self.model.rounds} rounds of {self.model.local_epochs} local epoch(s) on {self.model.num_clients} clients.")
        if self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.last_model_path:
            print(f"Last checkpoint: {self.trainer.checkpoint_callback.last_model_path}")
        if logger is not None:
            print(f"MLflow run {logger.run_id} in experiment {logger.name} at {logger._tracking_uri}")
            print(f"See it with: mlflow ui --backend-store-uri {logger._tracking_uri}")


def _check_ckpt_args(args: list[str]) -> None:
    """A corrupt or foreign --ckpt_path fails here, clearly, before Lightning unpickles it."""
    for i, arg in enumerate(args):
        if arg.startswith("--ckpt_path="):
            read_checkpoint(arg.split("=", 1)[1])
        elif arg == "--ckpt_path" and i + 1 < len(args):
            read_checkpoint(args[i + 1])


def run_cli(args: list[str] | None = None, extra_callbacks: list[Callback] | None = None) -> HuSCFCLI:
    """Run LightningCLI ``fit`` with the packaged defaults; returns the CLI (trainer, model).

    ``extra_callbacks`` join the trainer's callbacks: objects the command line cannot express,
    such as a sweep trial's pruning callback.
    """
    _check_ckpt_args(list(sys.argv[1:] if args is None else args))
    defaults = {"default_config_files": [DEFAULT_CONFIG], "parser_mode": "omegaconf"}
    with warnings.catch_warnings():
        # Explicit args (sweep trials, the `fit` command's own argv) are deliberate; Lightning warns whenever the
        # process also has command-line arguments, which a sweep always has.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended to run from within Python")
        return HuSCFCLI(
            HuSCFGAN,
            HuSCFDataModule,
            args=args,
            parser_kwargs={"fit": defaults},
            save_config_callback=MLflowSaveConfig,
            parser_class=HuSCFArgumentParser,
            save_config_kwargs={"save_to_log_dir": False},
            auto_configure_optimizers=False,
            trainer_defaults={"callbacks": list(extra_callbacks)} if extra_callbacks else None,
        )
