"""`huscf_lightning.compat`: every private name of torch, Lightning and Optuna the package relies on exists in
the installed versions and does what the package relies on it for (a release that drops or changes one fails
here); where one is gone, the fallback gives the same result or the error names the package and version; and
no other module of the package uses these names."""

from __future__ import annotations

import ast
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path

import lightning.pytorch as pl
import optuna
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from optuna.trial import TrialState
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, TensorDataset

from huscf_lightning import compat
from huscf_lightning.collectives import SyncedBatchNorm
from huscf_lightning.compat import CompatibilityError
from huscf_lightning.engine.checkpoints import RoundCheckpoint
from huscf_lightning.errors import HuSCFError
from huscf_lightning.split.network import copy_tensors
from huscf_lightning.sweep.storage import open_storage

PACKAGE = Path(compat.__file__).parent
# The private names compat.py wraps: no other module of the package may name them.
WRAPPED = {
    "_foreach_copy_",
    "_parameters",
    "_buffers",
    "_BatchNorm",
    "_accelerator_connector",
    "_should_skip_saving_checkpoint",
    "_monitor_candidates",
    "_save_last_checkpoint",
    "_storage",
    "_trial_id",
}
# Private members of torch/Lightning/Optuna classes that a package class overrides (they cannot be wrapped).
OVERRIDDEN = {("huscf_lightning.collectives", "SyncedBatchNorm", "_check_input_dim")}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def _gone(err: pytest.ExceptionInfo[CompatibilityError], what: str, package: str) -> None:
    """The error names the private name, the package and its installed version, and is a HuSCFError."""
    message = str(err.value)
    assert isinstance(err.value, HuSCFError)
    assert what in message and f"{package} {version(package)}" in message and "pyproject.toml" in message


def _bits(tensors: list[Tensor]) -> list[Tensor]:
    """Each tensor's bytes, so a comparison tells -0.0 from 0.0 and NaN payloads apart."""
    return [t.detach().cpu().reshape(-1).view(torch.uint8) for t in tensors]


def _copy_case(device: str) -> tuple[list[Tensor], list[Tensor]]:
    """Destinations and sources (each pair of one dtype) of several dtypes and layouts, with -0.0, NaN, infinities."""
    floats = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-40, 3.5], device=device)
    dst = [
        torch.zeros(7, device=device),
        torch.zeros(3, 4, device=device).t(),  # not contiguous
        torch.zeros(5, dtype=torch.int64, device=device),
        torch.zeros(2, 3, dtype=torch.bfloat16, device=device),
        torch.zeros((), dtype=torch.float64, device=device),
    ]
    src = [
        floats,
        torch.randn(4, 3, device=device),
        torch.arange(5, device=device) - 2,
        torch.randn(2, 3, device=device).bfloat16(),
        torch.tensor(2.0**-60, dtype=torch.float64, device=device),
    ]
    return dst, src


@pytest.mark.parametrize("device", DEVICES)
def test_foreach_copy_is_torch_fused_copy_in_place(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fused = torch._foreach_copy_
    calls = []
    monkeypatch.setattr(torch, "_foreach_copy_", lambda d, s: calls.append(len(d)) or fused(d, s))
    dst, src = _copy_case(device)
    before = [t.data_ptr() for t in dst]
    compat.foreach_copy(dst, src)
    assert calls == [len(dst)]
    assert [t.data_ptr() for t in dst] == before
    assert all(torch.equal(a, b) for a, b in zip(_bits(dst), _bits(src)))
    compat.foreach_copy([], [])  # nothing to copy: no kernel (torch refuses empty lists)
    assert calls == [len(dst)]


@pytest.mark.parametrize("device", DEVICES)
def test_without_foreach_copy_the_fallback_writes_the_same_bytes(device: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dst, src = _copy_case(device)
    fused_dst = [t.clone() for t in dst]
    torch._foreach_copy_(fused_dst, src)
    monkeypatch.delattr(torch, "_foreach_copy_")
    compat.foreach_copy(dst, src)
    assert all(torch.equal(a, b) for a, b in zip(_bits(dst), _bits(fused_dst)))
    stacked = torch.zeros(3, 4, device=device, requires_grad=True)
    copy_tensors([stacked], [torch.ones(3, 4, device=device)])  # the split network's copy: outside autograd
    assert torch.equal(stacked.detach(), torch.ones(3, 4, device=device)) and stacked.grad_fn is None


def test_a_module_parameter_table_is_what_torch_reads_and_takes_a_plain_tensor() -> None:
    layer = nn.Linear(3, 2)
    table = compat.parameter_table(layer)
    assert table is vars(layer)["_parameters"] and set(table) == {"weight", "bias"}
    view = torch.randn(4, 2, 3)[1]  # a row of a stacked tensor: not an nn.Parameter
    with pytest.raises(TypeError):
        layer.register_parameter("weight", view)  # why no public call can do it
    table["weight"] = view
    x = torch.randn(5, 3)
    assert layer.weight is view and dict(layer.named_parameters())["weight"] is view
    assert torch.equal(layer(x), x @ view.T + layer.bias)
    assert torch.equal(functional_call(layer, dict(layer.named_parameters()), (x,)), layer(x))


def test_a_module_buffer_table_is_what_torch_reads_and_keeps_persistence() -> None:
    norm = nn.BatchNorm1d(2)
    norm.register_buffer("scratch", torch.zeros(2), persistent=False)
    table = compat.buffer_table(norm)
    assert table is vars(norm)["_buffers"] and {"running_mean", "running_var", "scratch"} <= set(table)
    table["running_mean"], table["scratch"] = torch.full((2,), 3.0), torch.ones(2)
    assert torch.equal(norm.running_mean, torch.full((2,), 3.0)) and torch.equal(dict(norm.named_buffers())["scratch"], torch.ones(2))
    assert "scratch" not in norm.state_dict() and torch.equal(norm.state_dict()["running_mean"], torch.full((2,), 3.0))
    out = norm.eval()(torch.full((4, 2), 3.0))
    assert torch.allclose(out, torch.zeros(4, 2))  # normalised with the replaced running mean


@pytest.mark.parametrize("name, read", [("_parameters", compat.parameter_table), ("_buffers", compat.buffer_table)])
def test_a_module_without_its_tensor_table_is_a_clear_error(name: str, read, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = nn.Linear(3, 2)
    monkeypatch.delitem(vars(layer), name)
    with pytest.raises(CompatibilityError) as err:
        read(layer)
    _gone(err, f"torch.nn.Module.{name}", "torch")


def test_batch_norm_base_is_every_batch_norm_base_and_its_forward_calls_check_input_dim() -> None:
    base = compat.batch_norm_base()
    assert base is nn.modules.batchnorm._BatchNorm
    assert all(issubclass(kind, base) for kind in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, SyncedBatchNorm))
    with pytest.raises(ValueError, match="expected at least 2D input"):  # SyncedBatchNorm's override, called by torch
        SyncedBatchNorm(3)(torch.zeros(3))
    x = torch.randn(4, 3, 2, 2)
    assert torch.allclose(SyncedBatchNorm(3)(x), nn.BatchNorm2d(3)(x))  # 4D passes the override (any dims >= 2)


def test_without_batch_norm_base_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(nn.modules.batchnorm, "_BatchNorm")
    with pytest.raises(CompatibilityError) as err:
        compat.batch_norm_base()
    _gone(err, "torch.nn.modules.batchnorm._BatchNorm", "torch")


def _trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", **kwargs
    )


@pytest.mark.parametrize("wrap", [True, False])
def test_uses_distributed_sampler_is_the_trainer_setting(wrap: bool, tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, use_distributed_sampler=wrap, enable_checkpointing=False)
    assert trainer._accelerator_connector.use_distributed_sampler is wrap
    assert compat.uses_distributed_sampler(trainer) is wrap


@pytest.mark.parametrize("gone", ["_accelerator_connector", "use_distributed_sampler"])
def test_a_trainer_without_the_sampler_setting_is_a_clear_error(gone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(tmp_path, enable_checkpointing=False)
    monkeypatch.delattr(trainer if gone == "_accelerator_connector" else trainer._accelerator_connector, gone)
    with pytest.raises(CompatibilityError) as err:
        compat.uses_distributed_sampler(trainer)
    _gone(err, "Trainer._accelerator_connector", "lightning")


class _Tiny(pl.LightningModule):
    """One linear layer, two batches an epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return self.layer(batch[0]).square().mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2)


def test_model_checkpoint_private_steps_have_the_signatures_compat_calls() -> None:
    expected = {
        "_should_skip_saving_checkpoint": ["self", "trainer"],
        "_monitor_candidates": ["self", "trainer"],
        "_save_last_checkpoint": ["self", "trainer", "monitor_candidates"],
    }
    for name, parameters in expected.items():
        assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters) == parameters, name


class _LastAtEpochStart(pl.Callback):
    """The ``global_step`` in ``last.ckpt`` when each epoch starts (None: no file yet)."""

    def __init__(self, path: Path) -> None:
        self.path, self.steps = path, []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.steps.append(torch.load(self.path, weights_only=False)["global_step"] if self.path.exists() else None)


def test_save_last_checkpoint_writes_last_ckpt_at_an_epoch_end_unless_lightning_skips(tmp_path: Path) -> None:
    probe = _LastAtEpochStart(tmp_path / "kept" / "last.ckpt")
    trainer = _trainer(tmp_path, max_epochs=3, callbacks=[RoundCheckpoint(dirpath=tmp_path / "kept"), probe])
    trainer.fit(_Tiny())
    assert probe.steps == [None, 2, 4]  # written by each epoch's end (two steps an epoch), before the next starts
    compat.save_last_checkpoint(RoundCheckpoint(dirpath=tmp_path / "skipped"), _trainer(tmp_path))
    assert not (tmp_path / "skipped").exists()  # not fitting: Lightning's _should_skip_saving_checkpoint says skip


@pytest.mark.parametrize("gone", ["_should_skip_saving_checkpoint", "_monitor_candidates", "_save_last_checkpoint"])
def test_a_model_checkpoint_without_a_private_step_is_a_clear_error(gone: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(ModelCheckpoint, gone)
    with pytest.raises(CompatibilityError) as err:
        compat.save_last_checkpoint(RoundCheckpoint(dirpath=tmp_path), _trainer(tmp_path))
    _gone(err, f"ModelCheckpoint.{gone}", "lightning")
    assert not list(tmp_path.glob("*.ckpt"))


def _orphan(url: str | None) -> tuple[optuna.Study, optuna.trial.FrozenTrial]:
    """A study in the storage ``url`` names with one running trial, as a dead worker leaves it (frozen: no live Trial)."""
    study = optuna.create_study(study_name="compat", storage=open_storage(url))
    study.ask()
    (trial,) = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return study, trial


@pytest.mark.parametrize("kind", ["memory", "sqlite", "journal"])
def test_set_trial_user_attr_on_storage_records_on_a_frozen_running_trial(kind: str, tmp_path: Path) -> None:
    url = {"memory": None, "sqlite": f"sqlite:///{tmp_path / 'optuna.db'}", "journal": f"journal:{tmp_path / 'optuna.log'}"}[kind]
    study, trial = _orphan(url)
    assert isinstance(study._storage, optuna.storages.BaseStorage) and isinstance(trial._trial_id, int)
    assert list(inspect.signature(study._storage.set_trial_user_attr).parameters) == ["trial_id", "key", "value"]
    compat.set_trial_user_attr_on_storage(study, trial, "error", "its worker died")
    study.tell(trial.number, state=TrialState.FAIL)
    reread = study if url is None else optuna.load_study(study_name="compat", storage=open_storage(url))
    (failed,) = reread.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs == {"error": "its worker died"}


@pytest.mark.parametrize("gone", ["_storage", "_trial_id"])
def test_optuna_without_a_private_name_is_a_clear_error(gone: str, monkeypatch: pytest.MonkeyPatch) -> None:
    study, trial = _orphan(None)
    monkeypatch.delattr(study if gone == "_storage" else trial, gone)
    with pytest.raises(CompatibilityError) as err:
        compat.set_trial_user_attr_on_storage(study, trial, "error", "x")
    _gone(err, gone, "optuna")


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "compat.py")


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_but_compat_uses_the_private_names_it_wraps(path: Path) -> None:
    tree = ast.parse(path.read_text())
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    used |= {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    assert not used & WRAPPED, f"{path} uses {sorted(used & WRAPPED)}: go through huscf_lightning.compat"


def _class_members(tree: ast.Module) -> list[tuple[str, str]]:
    """(class, member) for every private member written in a top-level class body of a module's source."""
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names = [item.name]
                else:
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target] if isinstance(item, ast.AnnAssign) else []
                    names = [t.id for t in targets if isinstance(t, ast.Name)]
                found += [(node.name, n) for n in names if n.startswith("_") and not n.startswith("__")]
    return found


def test_no_package_class_overrides_a_private_member_of_another_package_but_the_listed_ones() -> None:
    overridden = set()
    for path in _sources():
        module = importlib.import_module(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for class_name, member in _class_members(ast.parse(path.read_text())):
            bases = getattr(module, class_name).__mro__[1:]
            if any(member in vars(base) for base in bases if not base.__module__.startswith("huscf_lightning")):
                overridden.add((module.__name__, class_name, member))
    assert overridden == OVERRIDDEN
