"""Weighted averaging of client states stacked on a leading client axis.

For one tensor of one block, the copies the K clients use are stacked as (K, ...); a
weights matrix (G, K) from `weights.py` gives the G averages (G, ...) in one einsum, with
no loop over clients. Integer tensors (BatchNorm's ``num_batches_tracked``) are counters,
not quantities to average: each row takes the largest count among the clients that row
weighs (nonzero weight), so a counter never goes backwards and stays an integer.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from torch import Tensor

from huscf_lightning.errors import HuSCFError

ROW_SUM_TOLERANCE = 1e-5


class AveragingError(HuSCFError, ValueError):
    """Stacked states or a weights matrix that cannot be averaged; the message names the fix."""


def average_stacked(stacked: Tensor, weights: Tensor) -> Tensor:
    """Averages (G, ...) of a client-stacked tensor (K, ...) under a (G, K) weights matrix.

    Floating tensors: out[g] = sum_k weights[g, k] * stacked[k], in the tensor's dtype.
    Integer tensors: out[g] = max of stacked[k] over the clients k with weights[g, k] != 0.
    Each row of ``weights`` must be non-negative and sum to 1.
    """
    _check_weights(weights)
    return _average_one("stacked", stacked, weights)


def average_states(stacked: Mapping[Hashable, Tensor], weights: Tensor) -> dict[Hashable, Tensor]:
    """`average_stacked` for every tensor of a state, name -> (K, ...) to name -> (G, ...)."""
    _check_weights(weights)
    return {name: _average_one(name, tensor, weights) for name, tensor in stacked.items()}


def partial_average_states(
    stacked: Mapping[Hashable, Tensor], weights: Tensor, columns: Tensor
) -> dict[Hashable, Tensor]:
    """The share of `average_states` that the clients ``columns`` (indices into the weights' columns) give, with
    ``stacked`` holding only their rows: floating tensors their weighted sum, integer counters their largest
    count (the smallest integer where a row weighs none of them). Summing the floating parts and taking the
    largest integer parts over shards of the clients gives `average_states`: how ranks that each hold some
    clients average them (`huscf_lightning.collectives`)."""
    _check_weights(weights)
    part = weights[:, columns.to(weights.device)]
    return {name: _average_one(name, tensor, part) for name, tensor in stacked.items()}


def _average_one(name: Hashable, stacked: Tensor, weights: Tensor) -> Tensor:
    """One tensor's averages; ``weights`` already checked."""
    if not torch.is_tensor(stacked) or stacked.dim() == 0 or stacked.shape[0] != weights.shape[1]:
        shape = tuple(stacked.shape) if torch.is_tensor(stacked) else type(stacked).__name__
        raise AveragingError(
            f"{name!r} must be stacked on a leading client axis of length {weights.shape[1]} (the weights' "
            f"columns); got {shape}. Stack one copy per client, in the weights' client order."
        )
    if stacked.is_floating_point():
        return torch.einsum("gk,k...->g...", weights.to(device=stacked.device, dtype=stacked.dtype), stacked)
    if stacked.is_complex() or stacked.dtype == torch.bool:
        raise AveragingError(
            f"{name!r} has dtype {stacked.dtype}, which has no meaningful average; only floating-point "
            "parameters/buffers and integer counters can be aggregated. Leave it out of the stacked state."
        )
    weighed = (weights != 0).to(stacked.device).view(*weights.shape, *([1] * (stacked.dim() - 1)))
    lowest = torch.iinfo(stacked.dtype).min
    return torch.where(weighed, stacked.unsqueeze(0), torch.full_like(stacked, lowest).unsqueeze(0)).amax(dim=1)


def _check_weights(weights: Tensor) -> None:
    """Raise unless ``weights`` is a (G, K) matrix of non-negative rows summing to 1."""
    if not torch.is_tensor(weights) or weights.dim() != 2 or not weights.is_floating_point() or 0 in weights.shape:
        shape = tuple(weights.shape) if torch.is_tensor(weights) else type(weights).__name__
        raise AveragingError(
            f"weights must be a floating (G, K) matrix, one row per group and one column per client; got "
            f"{shape}. Build it with group_weights or fedavg_weights."
        )
    row_sums = weights.sum(dim=1, dtype=torch.float64)
    valid = (
        bool(torch.isfinite(weights).all())
        and not bool((weights < 0).any())
        and bool(((row_sums - 1).abs() <= ROW_SUM_TOLERANCE).all())
    )
    if not valid:
        raise AveragingError(
            f"Every weights row must be non-negative and finite and sum to 1; the row sums are "
            f"{row_sums.tolist()}. Normalise each row (group_weights and fedavg_weights return them so)."
        )
