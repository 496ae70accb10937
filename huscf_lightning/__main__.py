"""Command line: ``fit`` (LightningCLI, omegaconf mode), plus ``cuts``, ``evaluate`` and ``sweep``.

``python -m huscf_lightning fit`` with no arguments runs the packaged default job.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from lightning.fabric.utilities.rank_zero import rank_zero_only

from huscf_lightning.errors import HuSCFError

# Commands beside LightningCLI's fit/validate/test: name -> (module with add_arguments/run, description).
COMMANDS = {
    "compare": ("cli.compare", "Methods x scenarios x seeds on one budget, each cell a nested MLflow run; the table."),
    "cuts": ("cli.cuts", "Cut-point selection alone: latency model and GA over device profiles."),
    "evaluate": ("cli.evaluate", "Utility test of a saved run's generators, from its checkpoint."),
    "privacy": ("cli.privacy", "What the server can learn from a saved run: image reconstruction and label attacks."),
    "sweep": ("cli.sweep", "Optuna sweep of fit runs, each trial a nested MLflow run."),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m huscf_lightning`` and the ``huscf-lightning`` script."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_rank_zero_or_warning)
    package_log = logging.getLogger("huscf_lightning")
    package_log.addHandler(handler)
    package_log.setLevel(logging.INFO)
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv), argv)
    except HuSCFError as err:  # the package's own errors are one paragraph naming the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started (during training the fit itself reports it)
        print("\nInterrupted before training started; nothing was tracked.", file=sys.stderr)
        return 130
    finally:
        package_log.removeHandler(handler)


def _rank_zero_or_warning(record: logging.LogRecord) -> bool:
    """Information from the first process only: a fit sharded over processes runs this code once per rank
    (Lightning sets ``rank_zero_only.rank`` in each); warnings and errors come from every rank."""
    return record.levelno >= logging.WARNING or getattr(rank_zero_only, "rank", 0) == 0


USAGE = """usage: huscf-lightning COMMAND [options]

commands:
  fit        train (LightningCLI: --config FILE, dotted overrides, --print_config); no options = default job
{commands}

`huscf-lightning COMMAND --help` shows a command's options."""


def _dispatch(args: list[str], argv: list[str] | None) -> int:
    command = args[0] if args else None
    if command in (None, "-h", "--help"):
        listed = "\n".join(f"  {name:<10} {description}" for name, (_, description) in COMMANDS.items())
        print(USAGE.format(commands=listed))
        return 0 if command else 2
    if command in COMMANDS:
        module_name, description = COMMANDS[command]
        module = importlib.import_module(f"huscf_lightning.{module_name}")
        parser = argparse.ArgumentParser(prog=f"huscf-lightning {command}", description=description)
        module.add_arguments(parser)
        return module.run(parser.parse_args(args[1:]))
    from huscf_lightning.cli.lightning_cli import run_cli

    run_cli(argv)
    return 0

if __name__ == "__main__":
    sys.exit(main())
