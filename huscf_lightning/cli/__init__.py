"""The command line: LightningCLI's ``fit`` (`lightning_cli`), the checks before a run exists (`preflight`),
and the ``compare``, ``cuts``, ``evaluate`` and ``sweep`` commands, one module each (``add_arguments`` and
``run``, dispatched by ``huscf_lightning.__main__``)."""

from huscf_lightning.cli.lightning_cli import HuSCFCLI, run_cli

__all__ = ["HuSCFCLI", "run_cli"]
