"""The torch.distributed collectives a run sharded over processes needs, each a no-op in one process.

They sit below every layer (the split networks' batch norms, the wire's byte counts, the aggregation's
partial sums and the round callbacks all call them), so that N processes compute what one does; the
strategy that starts the processes is `engine.distributed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from huscf_lightning.compat import batch_norm_base, foreach_copy


def world_size() -> int:
    """Processes in the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_(tensors: Sequence[Tensor]) -> None:
    """Sum ``tensors`` over ranks, in place, with one collective over their flattened concatenation."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    foreach_copy(tensors, [part.view_as(t) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)])


def sum_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Sum the parameters' gradients over ranks. A rank that did not use a parameter contributes zeros; a parameter
    no rank used keeps no gradient, so the optimiser skips it as it does in one process (with partial
    participation a server block can go unused for a round)."""
    if world_size() == 1:
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    used = max_(torch.tensor([p.grad is not None for p in params], dtype=torch.uint8, device=params[0].device))  # NCCL: on the GPU
    params = [p for p, anywhere in zip(params, used.tolist()) if anywhere]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    sum_([p.grad for p in params])


def max_(tensor: Tensor) -> Tensor:
    """The elementwise maximum over ranks (a new tensor)."""
    if world_size() == 1:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class _AllReduceSum(torch.autograd.Function):
    """The sum over ranks, differentiable: its gradient is the sum over ranks of the output's gradients.

    Written here because ``torch.distributed.nn.functional.all_reduce``, which does the same, is deprecated
    and its named successor (``torch.distributed._functional_collectives``) is private."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)  # gloo and NCCL sum dense tensors
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _AllReduceSum.apply(grad)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """``tensor`` summed over ranks, with autograd through the sum (itself in one process)."""
    return _AllReduceSum.apply(tensor) if world_size() > 1 else tensor


_BatchNorm = batch_norm_base()  # torch's base of BatchNorm1d/2d/3d


class SyncedBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the batch over all ranks (one process's, split).

    ``torch.nn.SyncBatchNorm`` runs on GPUs only; this one runs wherever torch.distributed does (gloo on
    a CPU too): the sums go through `all_reduce_sum`, which is differentiable, so the backward is the
    one-process backward. Two passes (mean, then centred squares) keep it as accurate as one process's.
    A rank with no sample in the batch still calls it (with an empty batch, whose output joins the loss)
    so every rank takes part in the sums. The backward's sums run in the same order on every rank: the
    autograd engine runs a graph's nodes in reverse creation order, and every rank creates the server
    blocks' nodes in the same order (each calls each block once per forward). Same parameters and
    buffers as the batch norm it replaces.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        totals = all_reduce_sum(torch.cat([x.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                # every rank's batch empty (a server block no client of the round runs there): one process never
                # calls the block, so its statistics stay as they are (not 0/0 = NaN) and it counts no batch
                seen = n > 0
                self.num_batches_tracked.add_(seen.to(self.num_batches_tracked.dtype))
                if self.momentum is not None:
                    factor = self.momentum
                else:  # a cumulative average (reads the count: one host sync, as torch's own batch norm does)
                    factor = 1.0 / max(float(self.num_batches_tracked), 1.0)
                mean_now = self.running_mean.mul(1 - factor).add_(mean.detach(), alpha=factor)
                var_now = self.running_var.mul(1 - factor).add_(var.detach() * (n / (n - 1)), alpha=factor)
                self.running_mean.copy_(torch.where(seen, mean_now, self.running_mean))
                self.running_var.copy_(torch.where(seen, var_now, self.running_var))
        out = centred / torch.sqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batch_norms(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm1d/2d/3d replaced by a `SyncedBatchNorm` holding the same tensors."""
    for name, child in list(module.named_children()):
        if isinstance(child, _BatchNorm) and not isinstance(child, SyncedBatchNorm):
            synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            like = next(t for t in child.state_dict().values() if t.is_floating_point())
            synced.to(device=like.device, dtype=like.dtype).load_state_dict(child.state_dict())
            setattr(module, name, synced.train(child.training))
        else:
            sync_batch_norms(child)
    return module
