"""The LightningCLI of huscf_lightning: packaged defaults, rounds -> epochs, MLflow config record."""

from __future__ import annotations

import difflib
import logging
import sys
import time
import warnings
from importlib.resources import files
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import MLFlowLogger
from mlflow.entities import RunStatus

from huscf_lightning.cli.preflight import check_before_run
from huscf_lightning.config import check_optimiser_settings
from huscf_lightning.data import HuSCFDataModule
from huscf_lightning.engine.checkpoints import AtomicCheckpointIO, RoundCheckpoint, read_checkpoint
from huscf_lightning.engine.distributed import shard_clients_over_processes
from huscf_lightning.engine.module import HuSCFGAN
from huscf_lightning.engine.tracking import check_tracking_uri, log_text, mlflow_logger, open_store
from huscf_lightning.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONFIG = str(files("huscf_lightning.configs") / "default.yaml")


def config_keys(config: object) -> list[str]:
    """Every dotted key of a parsed fit config (a jsonargparse Namespace): its leaves and their parent groups."""
    leaves = [k for k in config.keys() if k != "config"]
    groups = {leaf.rsplit(".", i)[0] for leaf in leaves for i in range(1, leaf.count(".") + 1)}
    return sorted({*leaves, *groups})


def _exception_chain(ex: BaseException | None) -> list[BaseException]:
    """``ex`` and the exceptions it was raised from, outermost first."""
    chain = []
    while ex is not None and ex not in chain:
        chain.append(ex)
        ex = ex.__cause__ or ex.__context__
    return chain


def _parse_problem(message: str, ex: BaseException | None) -> tuple[list[str], str]:
    """(unknown keys, value problem) of a jsonargparse error.

    jsonargparse raises a KeyError (its NSKeyError) for a key no parser accepts and chains a nested section's error (e.g.
    inside ``model.federation``) under the outer one, each level's message starting ``Parser key "<key>"``:
    the chain gives the key's full path and the innermost exception the problem itself. Unrecognized
    command-line options come without an exception, listed in the message.
    """
    chain = _exception_chain(ex)
    if not chain:
        listed = message.partition(":")[2].split() if message.startswith("unrecognized arguments") else []
        return [token.split("=", 1)[0].lstrip("-") for token in listed if token.startswith("--")], ""
    texts = [str(e.args[0]) if e.args else str(e) for e in chain]
    path: list[str] = []
    for text in texts:
        if text.startswith('Parser key "'):
            key = text.split('"')[1]
            if key not in path:
                path.append(key)
    unknown = [text.split("'")[-2] for e, text in zip(chain, texts) if isinstance(e, KeyError) and text.count("'") >= 2]
    if unknown:
        return [".".join([*path, unknown[-1]])], ""
    problem = " ".join(texts[-1].split())
    if problem.startswith("Expected a <class 'float'>"):
        problem += ". A float setting takes a finite number, e.g. 2e-4"
    return [], f'Parser key "{".".join(path)}": {problem}.' if path else f"{problem.rstrip('.')}."


class HuSCFArgumentParser(LightningArgumentParser):
    """The fit parser, whose errors are one paragraph naming the bad key (with close matches) and the fix,
    instead of a usage listing of every option followed by the message."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_sources: list[LightningArgumentParser] = []

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # programmatic parsing (the sweep's checks) wants the exception
            super().error(message, ex)
        unknown, problem = _parse_problem(message, ex)
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
            text = problem
        sys.stderr.write(
            f"error: {text} See every key and its current value with `python -m huscf_lightning fit --print_config`, "
            f"and the options with `python -m huscf_lightning fit --help`.\n"
        )
        sys.exit(2)

    def _known_keys(self) -> list[str]:
        """The fit config's keys, for close-match hints (empty when the defaults themselves do not parse).

        The top-level parser knows only ``subcommand``: `HuSCFCLI.init_parser` lists its subcommand parsers
        in ``key_sources``.
        """
        keys: set[str] = set()
        for parser in [self, *getattr(self, "key_sources", [])]:
            try:
                keys.update(config_keys(parser.get_defaults()))
            except Exception:  # noqa: BLE001 - only a hint: a broken default config gets its own error elsewhere
                continue
        return sorted(
            {k.replace(".init_args", "") for k in keys if k != "subcommand" and not k.endswith(".class_path")}
        )


# Config keys that are not settings of the run: jsonargparse's and LightningCLI's own bookkeeping, the config
# files given, the checkpoint resumed, where the run is tracked and the run's own identity (config.yaml keeps
# them all).
_NOT_PARAMS = ("config", "__default_config__", "__path__", "_instantiator", "ckpt_path", "tracking_uri", "run_id", "run_name")


def run_params(config: dict) -> dict[str, Any]:
    """The resolved config as MLflow params, once: nested keys joined by ``/``, bookkeeping keys left out."""
    params: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in _NOT_PARAMS:
                    walk(value, f"{prefix}{key}/" if key != "init_args" else prefix)
        else:
            params[prefix.rstrip("/")] = node

    walk(config, "")
    return params


class MLflowSaveConfig(SaveConfigCallback):
    """Records the resolved config in the run: once as params (`run_params`) and in full as ``config.yaml``.

    Its ``setup`` is where the MLflow run is created; ``run_id`` remembers it for the CLI (None until then).
    """

    run_id: str | None = None

    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer)
        if logger is None:
            return
        self.run_id = logger.run_id
        logger.log_hyperparams(run_params(self.config.as_dict()))
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

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """Every parser made after the main one is a subcommand's: the main parser lists them for key hints."""
        parser = super().init_parser(**kwargs)
        main = getattr(self, "parser", None)
        if main is not None:
            main.key_sources.append(parser)
        return parser

    def before_instantiate_classes(self) -> None:
        """Check every value that can be checked from the config alone, and the tracking store, before anything
        is built: the training length is the model's rounds; learning rates and betas are usable; the store
        answers and can be written. Then resolve ``--ckpt_path last`` and name the run."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        epochs = config.model.rounds * config.model.local_epochs
        if config.trainer.max_epochs not in (None, epochs):
            raise ConfigError(
                f"trainer.max_epochs={config.trainer.max_epochs} is set, but a run's length is model.rounds x "
                f"model.local_epochs (= {epochs} here); drop trainer.max_epochs and set --model.rounds instead."
            )
        config.trainer.max_epochs = epochs
        shard_clients_over_processes(config.trainer)
        check_optimiser_settings(config.model.lr_g, config.model.lr_d, config.model.betas)
        logger_args = self.logger_args = _mlflow_logger_args(config)
        self.tracking_uri = getattr(logger_args, "tracking_uri", None)
        if self.tracking_uri:
            check_tracking_uri(self.tracking_uri)
        if not self.subcommand:  # parsed only (the sweep's checks): nothing to resume or name
            return
        if self.tracking_uri:  # MLFlowLogger opens the store when it is built: its tables are made here, in turn
            open_store(self.tracking_uri)
        if config.get("ckpt_path") == "last":
            config.ckpt_path = self._latest_checkpoint(config, logger_args)
            self._restore_checkpoint_hparams(config.ckpt_path)
        if logger_args is not None and not logger_args.get("run_name") and not logger_args.get("run_id"):
            logger_args.run_name = default_run_name(config)

    def _latest_checkpoint(self, config: Any, logger_args: Any) -> str:
        """``last.ckpt`` of the latest run (newest file) in the experiment this fit logs to, or without MLflow
        in the trainer's ``default_root_dir``."""
        root = Path(config.trainer.default_root_dir or ".")
        if logger_args is None:
            candidates = list(root.glob("checkpoints/last.ckpt"))
            where = f"{root / 'checkpoints'}"
        else:
            experiment = open_store(self.tracking_uri).get_experiment_by_name(logger_args.experiment_name)
            candidates = list(root.glob(f"{experiment.experiment_id}/*/checkpoints/last.ckpt")) if experiment else []
            where = f"the runs of experiment {logger_args.experiment_name!r} under {root}"
        if not candidates:
            raise ConfigError(
                f"--ckpt_path last found no last.ckpt in {where}. Start without --ckpt_path, or pass a checkpoint's "
                "path (fit prints it at the end; every run's checkpoints/ folder has one after its first round)."
            )
        latest = max(candidates, key=lambda path: path.stat().st_mtime)
        log.info("--ckpt_path last: resuming %s", latest)
        return str(latest)

    def _restore_checkpoint_hparams(self, ckpt_path: str) -> None:
        """The model settings saved in the checkpoint, over the config (what LightningCLI does for a given path)."""
        hparams = {k: v for k, v in read_checkpoint(ckpt_path).get("hyper_parameters", {}).items() if k != "_instantiator"}
        if hparams:
            self.config = self.parser.parse_object({self.subcommand: {"model": hparams}}, self.config)

    def before_fit(self) -> None:
        """Save ``last.ckpt`` at every round end (a round is the unit of resumption), atomically. Lightning's own
        default checkpoint (every epoch) is replaced; a ModelCheckpoint the user configured is kept, and when it
        saves a ``last.ckpt`` itself, it is the one that does. The run's params are the config (`MLflowSaveConfig`):
        the module's hyperparameters are not logged a second time."""
        lightning_default = self._default_checkpoint()
        configured = [c for c in self.trainer.callbacks if isinstance(c, ModelCheckpoint) and c is not lightning_default]
        others = [c for c in self.trainer.callbacks if not isinstance(c, ModelCheckpoint)]
        own_last = any(c.save_last for c in configured)
        per_round = [] if own_last else [RoundCheckpoint()]
        self.trainer.callbacks = [*others, *per_round, *configured]
        if type(self.trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def _default_checkpoint(self) -> ModelCheckpoint | None:
        """The every-epoch ModelCheckpoint Lightning adds when none is configured (None when one is)."""
        configured = self.config[self.subcommand].trainer.callbacks or []
        given = (self.trainer_defaults or {}).get("callbacks", [])
        if any("ModelCheckpoint" in str(getattr(c, "class_path", "")) for c in configured) or any(
            isinstance(c, ModelCheckpoint) for c in given
        ):
            return None
        return self.trainer.checkpoint_callback

    def fit(self, model: HuSCFGAN, datamodule: HuSCFDataModule | None = None, ckpt_path: str | None = None, **kwargs: Any) -> None:
        """Pre-flight checks, then the tracked fit. Ctrl-C ends the MLflow run as KILLED (Lightning marks it
        FAILED) with the last finished round's checkpoint in place, and exits with status 130."""
        if datamodule is not None:
            check_before_run(model, datamodule, ckpt_path, progress_bar=self.trainer.progress_bar_callback is not None)
        if self.tracking_uri:
            open_store(self.tracking_uri, self.logger_args.experiment_name, self.logger_args.get("artifact_location"))
        try:
            self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)
        except SystemExit:
            if not self.trainer.interrupted:
                raise
            self._report_interrupt()
            raise SystemExit(130) from None

    def _report_interrupt(self) -> None:
        if not self.trainer.is_global_zero:
            return
        saver = next((c for c in self.trainer.callbacks if isinstance(c, MLflowSaveConfig)), None)
        run_id = saver.run_id if saver is not None else None
        if run_id is not None:
            mlflow_logger(self.trainer).experiment.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        checkpoint = self.trainer.checkpoint_callback.last_model_path if self.trainer.checkpoint_callback else ""
        print(
            f"\nInterrupted after {self.trainer.current_epoch // self.model.local_epochs} finished round(s)"
            + (f"; MLflow run {run_id} is marked KILLED" if run_id else "")
            + (f". Resume with --ckpt_path last (or --ckpt_path {checkpoint})." if checkpoint else "; no round had finished."),
            file=sys.stderr,
        )

    def after_fit(self) -> None:
        if not self.trainer.is_global_zero:  # a run sharded over processes reports once
            return
        logger = mlflow_logger(self.trainer)
        print(f"\nTrained {self.model.rounds} rounds of {self.model.local_epochs} local epoch(s) on {self.model.num_clients} clients.")
        if self.trainer.checkpoint_callback is not None and self.trainer.checkpoint_callback.last_model_path:
            print(f"Last checkpoint: {self.trainer.checkpoint_callback.last_model_path}")
        if logger is not None:
            print(f"MLflow run {logger.run_id} in experiment {logger.name} at {self.tracking_uri}")
            print(f"See it with: mlflow ui --backend-store-uri {self.tracking_uri}")


def _mlflow_logger_args(config: Any) -> Any:
    """The init_args of the config's MLFlowLogger (None when the fit is not tracked in MLflow)."""
    loggers = config.trainer.logger
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        class_path = str(getattr(logger, "class_path", ""))
        if class_path.endswith(MLFlowLogger.__name__):
            return logger.init_args
    return None


def default_run_name(config: Any) -> str:
    """What the run is: scenario, federation mode, seed and start time, e.g.
    ``mnist5k:4:iid+glyphs:4:iid-kld_clustered-seed0-20261127-143000``."""
    data = config.data
    scenario = data.get("scenario") or "+".join(
        f"{d.name}:{d.clients}:{d.distribution}" for d in data.domains
    )
    return f"{scenario}-{config.model.federation.mode}-seed{config.seed_everything}-{time.strftime('%Y%m%d-%H%M%S')}"


def _option_values(args: list[str], option: str) -> list[str]:
    """The values given to ``option`` on the command line, as ``--option=value`` or ``--option value``."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(f"{option}="):
            values.append(arg.split("=", 1)[1])
        elif arg == option and i + 1 < len(args):
            values.append(args[i + 1])
    return values


def _check_files(args: list[str]) -> None:
    """A --config file that is not YAML, or a corrupt or foreign --ckpt_path, fails here, naming the file,
    before jsonargparse (which reports YAML errors without the file name) or Lightning read it."""
    for path in _option_values(args, "--config"):
        try:
            yaml.safe_load(Path(path).read_text())
        except OSError:
            continue  # a missing file is the parser's own clear error
        except yaml.YAMLError as err:
            mark, start = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            if start is not None and err.context:
                where += f" ({err.context} that starts at line {start.line + 1}, column {start.column + 1})"
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"The config file {path} is not valid YAML: {problem}{where}. Fix that line (mind the "
                "indentation, brackets and quotes), or check it with `python -c \"import yaml; yaml.safe_load(open('"
                f"{path}'))\"`."
            ) from err
    for path in _option_values(args, "--ckpt_path"):
        if path != "last":
            read_checkpoint(path)


def run_cli(args: list[str] | None = None, extra_callbacks: list[Callback] | None = None) -> HuSCFCLI:
    """Run LightningCLI ``fit`` with the packaged defaults; returns the CLI (trainer, model).

    ``extra_callbacks`` join the trainer's callbacks: objects the command line cannot express,
    such as a sweep trial's pruning callback.
    """
    _check_files(list(sys.argv[1:] if args is None else args))
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
