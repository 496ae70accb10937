"""Command line: ``fit`` (LightningCLI, omegaconf mode), plus ``cuts`` and ``sweep``.

``python -m huscf_lightning fit`` with no arguments runs the packaged default job.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m huscf_lightning`` and the ``huscf-lightning`` script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[0] if args else None
    try:
        if command == "cuts":
            from huscf_lightning import cuts_command

            parser = argparse.ArgumentParser(prog="huscf-lightning cuts", description="Cut-point selection (GA) alone.")
            cuts_command.add_arguments(parser)
            return cuts_command.run(parser.parse_args(args[1:]))
        from huscf_lightning.cli import run_cli

        run_cli(argv)
        return 0
    except ValueError as err:
        if not type(err).__module__.startswith("huscf_lightning"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
