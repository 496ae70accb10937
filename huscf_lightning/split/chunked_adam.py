"""Adam whose CPU step walks each parameter in chunks through one small reused buffer.

PyTorch's single-tensor Adam (its CPU default) makes two full-size temporaries per parameter and step
(the square root of the second moment, then its division). With the clients' copies stacked, one
parameter holds every client's copy, tens of MiB at a handful of clients: each such temporary is a
fresh allocation that the C library maps from the system and page-faults in anew every step, which
costs more than the arithmetic. `ChunkedAdam` runs the same operations, in the same order, on slices
of at most `CHUNK` elements, writing the one temporary into a buffer kept across steps. Every operation
is elementwise, so each element sees exactly the arithmetic of ``torch.optim.Adam``: results are
bit-identical. Any setting that step does not cover (AMSGrad, weight decay, maximize, foreach, fused,
capturable, differentiable, complex or tensor hyper-parameters) takes the stock step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

CHUNK = 1 << 18
"""Elements per slice: 1 MiB of float32, small enough for the C library to reuse its memory every step."""


class ChunkedAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (same state, same results) with a chunked single-tensor step; see the module."""

    def __init__(
        self, params: Iterable[Tensor], lr: float, betas: tuple[float, float], eps: float = 1e-8, chunk: int = CHUNK
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps)
        self.chunk = chunk
        self._scratch: dict[tuple[torch.dtype, torch.device], Tensor] = {}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One Adam step; the chunked one when every group has the settings it covers, else the stock one."""
        if not all(self._covered(group) for group in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            steps: list[Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, [], steps)  # the stock state, made alike
            beta1, beta2 = group["betas"]
            for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
                step_t += 1
                step = step_t.item()
                step_size = group["lr"] / (1 - beta1**step)
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                for p, g, m, v, denom in self._slices(param, grad, exp_avg, exp_avg_sq):
                    m.lerp_(g, 1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    denom = torch.sqrt(v, out=denom) if denom is not None else v.sqrt()
                    denom.div_(bias_correction2_sqrt).add_(group["eps"])
                    p.addcdiv_(m, denom, value=-step_size)
        return loss

    def _covered(self, group: dict) -> bool:
        """Whether ``group``'s settings are those of the single-tensor step this class chunks."""
        plain = not (
            group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"] or group["fused"]
        )
        scalars = not any(isinstance(v, Tensor) for v in (group["lr"], *group["betas"]))
        real_cpu = all(p.device.type == "cpu" and not torch.is_complex(p) for p in group["params"])
        no_scaler = getattr(self, "grad_scale", None) is None and getattr(self, "found_inf", None) is None
        return plain and group["weight_decay"] == 0 and not group["foreach"] and scalars and real_cpu and no_scaler

    def _slices(
        self, *tensors: Tensor
    ) -> Iterable[tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]]:
        """(param, grad, exp_avg, exp_avg_sq, buffer) slice by slice; one whole slice and no buffer when a tensor
        is not contiguous (a flat slice would not be a view of it)."""
        if not all(t.is_contiguous() for t in tensors):
            yield (*tensors, None)
            return
        flat = [t.view(-1) for t in tensors]
        key = (tensors[0].dtype, tensors[0].device)
        if key not in self._scratch:
            self._scratch[key] = torch.empty(self.chunk, dtype=key[0], device=key[1])
        scratch = self._scratch[key]
        for start in range(0, flat[0].numel(), self.chunk):
            p, g, m, v = (t[start : start + self.chunk] for t in flat)
            yield p, g, m, v, scratch[: p.numel()]
