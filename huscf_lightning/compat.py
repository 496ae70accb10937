"""The private names of torch, Lightning and Optuna that huscf_lightning relies on, in one place.

Some things the package needs have no public API: a fused multi-tensor copy, a module's own parameter and
buffer tables (to run a block on views of a stacked tensor, as ``torch.func.functional_call`` does), whether
the Trainer wraps samplers for distributed runs, ModelCheckpoint's ``last.ckpt`` steps, an Optuna trial's
storage id. A private name can be renamed or dropped in any release, so every use goes through one function
here, and tests/test_compat.py checks each name on the installed versions: a release that drops one fails
that test, not a run. Where a name is gone at run time, a function either falls back to public calls that
give identical results (said in its docstring) or raises `CompatibilityError` naming the package and version;
none changes behaviour silently.

One private name cannot go through a function: `huscf_lightning.collectives.SyncedBatchNorm`
overrides ``_check_input_dim``, the hook torch's batch-norm forward calls to check the input's shape;
tests/test_compat.py checks that torch still calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from huscf_lightning.errors import HuSCFError

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import optuna
    from lightning.pytorch.callbacks import ModelCheckpoint
    from optuna.trial import FrozenTrial


class CompatibilityError(HuSCFError, RuntimeError):
    """An installed torch, Lightning or Optuna lacks a private name huscf_lightning relies on."""


def _private(owner: object, name: str, package: str, what: str) -> Any:
    """``owner.<name>`` (``what``, a private name of ``package``), or a `CompatibilityError` when it is gone."""
    try:
        return getattr(owner, name)
    except AttributeError:
        raise CompatibilityError(
            f"huscf_lightning relies on {what}, which the installed {package} {version(package)} does not have (it is "
            f"private to {package}, and this release renamed or removed it). Install a {package} version in the range "
            "huscf_lightning's pyproject.toml names; tests/test_compat.py checks every such name."
        ) from None


def foreach_copy(dst: Sequence[Tensor], src: Sequence[Tensor]) -> None:
    """``dst[i].copy_(src[i])`` for every i, in one fused multi-tensor kernel (``torch._foreach_copy_``, the
    one PyTorch's optimisers use).

    Fallback: where torch lacks ``_foreach_copy_``, one ``copy_`` per tensor. For a destination and source of
    one dtype (as every caller passes: a copy back into the tensors a result came from) the results are
    identical, a copy does no arithmetic; only the number of kernel launches differs. ``dst`` and ``src`` must
    not overlap in memory.
    """
    if not dst:
        return
    fused = getattr(torch, "_foreach_copy_", None)
    if fused is None:
        for target, value in zip(dst, src, strict=True):
            target.copy_(value)
        return
    fused(list(dst), list(src))


def parameter_table(module: nn.Module) -> dict[str, Tensor | None]:
    """The dict ``module`` keeps its own parameters in (``nn.Module._parameters``): what attribute reads,
    ``named_parameters`` and ``functional_call`` read. Writing to it puts any tensor (a row's view, not an
    ``nn.Parameter``) where a parameter is read, without ``register_parameter``'s checks and hooks.

    Error: no public call does this.
    """
    return _private(module, "_parameters", "torch", "torch.nn.Module._parameters")


def buffer_table(module: nn.Module) -> dict[str, Tensor | None]:
    """The dict ``module`` keeps its own buffers in (``nn.Module._buffers``), persistent or not: written to
    replace a buffer's tensor and keep its persistence (``register_buffer`` would reset it).

    Error: no public call does this.
    """
    return _private(module, "_buffers", "torch", "torch.nn.Module._buffers")


def batch_norm_base() -> type[nn.Module]:
    """torch's common base of BatchNorm1d/2d/3d (``torch.nn.modules.batchnorm._BatchNorm``), which
    `SyncedBatchNorm` extends and `sync_batch_norms` recognises batch norms by.

    Error: no public class is the base of every batch norm.
    """
    return _private(nn.modules.batchnorm, "_BatchNorm", "torch", "torch.nn.modules.batchnorm._BatchNorm")


def uses_distributed_sampler(trainer: pl.Trainer) -> bool:
    """Whether ``trainer`` wraps its dataloaders' samplers for a distributed run (its
    ``use_distributed_sampler`` argument, kept in ``Trainer._accelerator_connector``).

    Error: the Trainer has no public attribute for it.
    """
    connector = _private(trainer, "_accelerator_connector", "lightning", "Trainer._accelerator_connector")
    return bool(
        _private(connector, "use_distributed_sampler", "lightning", "Trainer._accelerator_connector.use_distributed_sampler")
    )


def save_last_checkpoint(callback: ModelCheckpoint, trainer: pl.Trainer) -> None:
    """Have ``callback`` save its ``last.ckpt`` now, unless Lightning skips saving at this point (a sanity check,
    a fast dev run, a save already made at this step): ModelCheckpoint's ``_should_skip_saving_checkpoint``,
    ``_monitor_candidates`` and ``_save_last_checkpoint``, as its own saves run them.

    Error: ModelCheckpoint has no public call that saves ``last.ckpt`` (with its naming, link and removal of the
    previous file).
    """
    skip = _private(callback, "_should_skip_saving_checkpoint", "lightning", "ModelCheckpoint._should_skip_saving_checkpoint")
    candidates = _private(callback, "_monitor_candidates", "lightning", "ModelCheckpoint._monitor_candidates")
    save = _private(callback, "_save_last_checkpoint", "lightning", "ModelCheckpoint._save_last_checkpoint")
    if not skip(trainer):
        save(trainer, candidates(trainer))


def set_trial_user_attr_on_storage(study: optuna.Study, trial: FrozenTrial, key: str, value: Any) -> None:
    """Set ``trial``'s user attribute ``key`` in ``study``'s storage, whatever the trial's state (Optuna's public
    ``Trial.set_user_attr`` needs the live trial, which a dead worker took with it): through ``Study._storage``
    and ``FrozenTrial._trial_id``.

    Error: Optuna has no public call that finds a trial's storage and id.
    """
    storage = _private(study, "_storage", "optuna", "optuna.Study._storage")
    trial_id = _private(trial, "_trial_id", "optuna", "optuna.trial.FrozenTrial._trial_id")
    storage.set_trial_user_attr(trial_id, key, value)
