"""One block's client copies as a single module whose every tensor has a leading client axis.

`stack_block` turns a block into its stacked form: a copy of the block in which every parameter
and buffer holds the copies of all its clients, row r for the r-th of them. The stacked module is
never called directly. A client's copy is a row of the storage, not a module: `RowCalls` runs
clients one by one on their rows' views, and `call_stacked` runs the block once over all (or some)
rows under ``torch.func.vmap``. Either way the stack's module computes on the rows' views, so
gradients land in the stacked ``.grad`` (one tensor per parameter, whatever the number of clients),
batch-norm running statistics are written in place into the stacked buffers, and one optimiser
step over the stacked parameters is one step of every client's copy (Adam is elementwise).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from huscf_lightning.compat import buffer_table, parameter_table
from huscf_lightning.nets import NetworkError


def named_tensors(module: nn.Module) -> dict[str, Tensor]:
    """Every parameter and buffer (persistent or not) by its state-dict name: what functional_call replaces."""
    return dict(module.named_parameters()) | dict(module.named_buffers())


def persistent_names(module: nn.Module) -> list[str]:
    """The names of the tensors a state dict holds (non-persistent buffers left out)."""
    return list(module.state_dict(keep_vars=True))


def with_tensors(block: nn.Module, tensors: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``block`` holding ``tensors`` (name -> tensor) instead of its own; parameters stay parameters."""
    made = copy.deepcopy(block)
    for name, old in named_tensors(made).items():
        owner_name, _, attr = name.rpartition(".")
        owner = made.get_submodule(owner_name)
        value = tensors[name]
        if isinstance(old, nn.Parameter):
            parameter_table(owner)[attr] = nn.Parameter(value, requires_grad=old.requires_grad)
        else:
            buffer_table(owner)[attr] = value
    return made


def stack_block(block: nn.Module, states: Sequence[Mapping[str, Tensor]]) -> nn.Module:
    """The stacked form of ``block``: row r of every tensor is ``states[r]``'s (each state: name -> tensor)."""
    names = named_tensors(block)
    return with_tensors(block, {name: torch.stack([state[name] for state in states]) for name in names})


def unstacked_row(stacked: nn.Module, template: nn.Module, row: int) -> nn.Module:
    """Client ``row``'s copy of the block as a plain module of ``template``'s structure (a copy, not a view)."""
    return with_tensors(template, {name: t[row].detach().clone() for name, t in named_tensors(stacked).items()})


class RowCalls:
    """A stack's rows, ready to run one client at a time on views of its row.

    One ``unbind`` per tensor gives every row's views, so the backward of all rows' uses is one stacked
    gradient (indexing rows one at a time would build one full-size gradient each). With ``gradients``
    (name -> buffer, kept by the caller across steps) each parameter's stacked gradient is written into
    its buffer (`_GradientInPlace`) instead of a fresh tensor. A call binds a row's
    views where the stack's module reads its tensors (its submodules' parameter and buffer tables, as
    ``torch.func.functional_call`` does) and puts the stack's own tensors back after; the tables are
    found once here, not on every call.
    """

    def __init__(self, stacked: nn.Module, gradients: dict[str, Tensor] | None = None) -> None:
        self.stacked = stacked
        tensors = named_tensors(stacked)
        in_place = gradients is not None
        unbound = {
            name: _GradientInPlace.apply(t, gradients, name) if in_place and t.requires_grad else t.unbind(0)
            for name, t in tensors.items()
        }
        rows = len(next(iter(unbound.values()))) if unbound else 0
        self.views = [{name: parts[r] for name, parts in unbound.items()} for r in range(rows)]
        canonical = {id(t): name for name, t in tensors.items()}
        self._slots = [  # (table, attribute, name): every place a tensor is read from, tied aliases included
            (table, attr, canonical[id(t)])
            for _, owner in stacked.named_modules(remove_duplicate=False)
            for table in (parameter_table(owner), buffer_table(owner))
            for attr, t in table.items()
            if t is not None
        ]

    def __call__(self, row: int, inputs: Sequence[Tensor]) -> Tensor:
        """The block's forward for the client in ``row``, on that row's views."""
        return self.call(self.views[row], inputs)

    def call(self, views: Mapping[str, Tensor], inputs: Sequence[Tensor]) -> Tensor:
        """The block's forward on ``views`` (name -> tensor, every tensor of the block)."""
        own = [table[attr] for table, attr, _ in self._slots]
        try:
            for table, attr, name in self._slots:
                table[attr] = views[name]
            return self.stacked(*inputs)
        finally:
            for (table, attr, _), tensor in zip(self._slots, own):
                table[attr] = tensor


class _GradientInPlace(torch.autograd.Function):
    """``unbind(0)`` of a stacked parameter whose backward writes the rows' gradients into ``.grad`` itself.

    Plain ``unbind``'s backward stacks the rows' gradients into a new tensor every step. On a CPU one that
    size (44 MiB for G's first linear at 8 clients) is above the C library's largest reused block, so it
    is fresh memory mapped and page-faulted in every step (about 13 ms a step, measured). Here it goes into
    a buffer kept across steps, which becomes ``.grad`` (added to it when ``.grad`` is already set), and the
    backward hands autograd nothing to accumulate. So this is for ``.backward()``, as training uses it:
    ``torch.autograd.grad`` taken with respect to a stacked parameter itself would find no gradient.
    """

    @staticmethod
    def forward(ctx, stacked: Tensor, gradients: dict[str, Tensor], name: str) -> tuple[Tensor, ...]:
        ctx.stacked, ctx.gradients, ctx.name = stacked, gradients, name
        ctx.set_materialize_grads(False)  # a row no client used this pass: None, not a zero tensor
        return stacked.unbind(0)

    @staticmethod
    @torch.no_grad()
    def backward(ctx, *row_grads: Tensor | None) -> tuple[None, None, None]:
        stacked = ctx.stacked
        if stacked.grad is not None:
            for grad, row_grad in zip(stacked.grad.unbind(0), row_grads):
                if row_grad is not None:
                    grad.add_(row_grad)
            return None, None, None
        buffer = ctx.gradients.get(ctx.name)
        like = (stacked.shape, stacked.dtype, stacked.device)
        if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != like:
            buffer = ctx.gradients[ctx.name] = torch.empty_like(stacked)
        if all(row_grad is not None for row_grad in row_grads):
            torch.stack(row_grads, out=buffer)
        else:
            for grad, row_grad in zip(buffer.unbind(0), row_grads):
                if row_grad is None:
                    grad.zero_()
                else:
                    grad.copy_(row_grad)
        stacked.grad = buffer
        return None, None, None


def call_stacked(stacked: nn.Module, rows: Tensor | None, inputs: Sequence[Tensor], where: str) -> Tensor:
    """The block once over the clients in ``rows`` (None: every row), each on its own copy, under vmap.

    ``inputs`` are stacked on a leading client axis in ``rows`` order. With every row the stacked tensors
    are used as they are (nothing is copied); a subset is gathered, and its updated batch-norm statistics
    are written back. ``where`` names the block in an error.
    """
    tensors = named_tensors(stacked)
    params = {n: t if rows is None else t[rows] for n, t in tensors.items() if isinstance(t, nn.Parameter)}
    buffers = {n: t if rows is None else t[rows] for n, t in tensors.items() if not isinstance(t, nn.Parameter)}

    def run_one(p: dict[str, Tensor], b: dict[str, Tensor], *args: Tensor) -> Tensor:
        return functional_call(stacked, (p, b), args)

    try:
        outputs = vmap(run_one, randomness="different")(params, buffers, *inputs)  # dropout: each client its own mask
    except RuntimeError as err:
        if not _runs_unbatched(stacked, [x[0] for x in inputs]):
            raise  # the block fails without vmap too: not a batching problem, the original error says what
        raise NetworkError(
            f"{where} runs for one client but not batched over clients with torch.func.vmap: {err}. Make the block "
            "vmap-compatible (no .item() or data-dependent Python branches, no in-place writes to tensors it does "
            "not own), or run clients one by one with --model.batch_clients=false."
        ) from err
    if rows is not None and stacked.training:
        with torch.no_grad():
            for name, gathered in buffers.items():
                tensors[name].index_copy_(0, rows, gathered)
    return outputs


def _runs_unbatched(stacked: nn.Module, inputs: list[Tensor]) -> bool:
    """Whether the block runs on one client's inputs without vmap (on copies of row 0: the storage is untouched)."""
    rows = RowCalls(stacked)
    try:
        with torch.no_grad():
            rows.call({name: view.detach().clone() for name, view in rows.views[0].items()}, inputs)
    except RuntimeError:
        return False
    return True
