"""The error the metrics raise for arguments or tensors they cannot use (the message names the fix)."""

from huscf_lightning.errors import HuSCFError


class MetricInputError(HuSCFError, ValueError):
    """Bad arguments or inputs to a metric; the CLI prints it as a one-paragraph error."""
