"""A method from outside the package: a FedProx-like strategy written in a user's own module (a file made here,
never imported by huscf_lightning) runs through `fit` and `compare` through the strategy's hooks alone."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from huscf_lightning.cli import run_cli
from huscf_lightning.compare import load_compare, run_comparison
from huscf_lightning.federation.strategy import known_strategies

TINY = str(Path(__file__).parent / "configs" / "tiny.yaml")
QUIET = ["--model.evaluation.metrics=[]", "--model.evaluation.utility_samples=0", "--model.evaluation.sample_grids=false"]

USER_MODULE = '''
"""FedProx (Li et al. 2020) on the clients' copies: FedAvg at round ends, and a proximal term
mu / 2 * ||w - w_round_start||^2 on every client's head and tail in every local step."""
import torch
from huscf_lightning.federation import FedAvg, register_strategy


@register_strategy
class FedProxLike(FedAvg):
    name = "fedprox_like"
    mu = 1.0e4

    def __init__(self, spec, seed=0):
        super().__init__(spec, seed)
        self.anchors = {}
        self.started = []
        self.drift = {}  # round -> the client copies' squared distance from the round start, at its last step

    def start_round(self, round_index, networks):
        self.started.append(round_index)
        self.round = round_index
        self.anchors = {name: [p.detach().clone() for p in net.client_stacks.parameters()] for name, net in networks.items()}

    def local_penalty(self, network):
        params = list(network.client_stacks.parameters())
        distance = sum(((p - a) ** 2).sum() for p, a in zip(params, self.anchors[network.name]))
        self.drift.setdefault(self.round, {})[network.name] = float(distance.detach())
        return 0.5 * self.mu * distance


@register_strategy
class NoProx(FedProxLike):
    """The same hooks with the term switched off: must train exactly as FedAvg does."""
    name = "noprox_like"
    mu = 0.0
'''


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "my_methods.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_methods", None)
    yield importlib.import_module("my_methods")
    sys.modules.pop("my_methods", None)


def _fit(tmp_path: Path, name: str, mode: str):
    uri = f"sqlite:///{tmp_path / name}.db"
    return run_cli(["fit", "--config", TINY, *QUIET, f"--model.federation.mode={mode}", "--data.cap=64",
                    f"--trainer.logger.init_args.tracking_uri={uri}", f"--trainer.default_root_dir={tmp_path / name}"])


def _weights(cli) -> dict[str, torch.Tensor]:
    return {f"G.{k}": v for k, v in cli.model.G.state_dict().items()} | {f"D.{k}": v for k, v in cli.model.D.state_dict().items()}


def test_a_strategy_from_a_users_module_trains_through_the_hooks(tmp_path: Path, user_module) -> None:
    assert "fedprox_like" in known_strategies() and "huscf_lightning" not in user_module.__file__
    fedavg = _fit(tmp_path, "fedavg", "fedavg")
    noprox = _fit(tmp_path, "noprox", "noprox_like")  # by its registered name
    prox = _fit(tmp_path, "prox", "my_methods.FedProxLike")  # by its class path
    # the hooks ran every round (3 rounds) and the penalty joined both networks' losses every step
    assert prox.model.strategy.started == noprox.model.strategy.started == [1, 2, 3]
    assert set(prox.model.strategy.drift[3]) == {"G", "D"}
    # a zero term changes nothing: the hooks alone do not perturb training
    before, after = _weights(fedavg), _weights(noprox)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # the proximal term holds the clients' copies near the round's start: far less drift than without it
    for net in ("G", "D"):
        free = noprox.model.strategy.drift[3][net]
        held = prox.model.strategy.drift[3][net]
        assert free > 0 and held < 0.5 * free, (net, held, free)
    changed = [k for k in before if not torch.equal(before[k], _weights(prox)[k])]
    assert changed


def test_a_users_method_runs_in_a_comparison(tmp_path: Path, user_module, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    base = yaml.safe_load(Path(TINY).read_text())
    base["model"]["evaluation"] = {"metrics": ["score"], "num_samples": 100, "utility_samples": 0, "sample_grids": False,
                                   "classifier_cache": str(tmp_path / "classifiers")}
    base["model"]["rounds"] = 2
    base["trainer"]["enable_checkpointing"] = False
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(base))
    spec = {
        "name": "user-method",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "base_config": "fit.yaml",
        "methods": ["fedprox_like", "fedavg"],  # a registered name is a method name, as the package's are
        "scenarios": {"two": {"data": base.pop("data")}},
        "seeds": [0],
        "ours": "fedprox_like",
    }
    (tmp_path / "fit.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = run_comparison(load_compare(str(tmp_path / "compare.yaml")))
    client = MlflowClient(spec["tracking_uri"])
    children = [r for r in client.search_runs([client.get_experiment_by_name("tests").experiment_id])
                if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == result.parent_run_id]
    cells = {r.data.tags["compare.cell"].split("|")[0]: r for r in children}
    assert set(cells) == {"method=fedprox_like", "method=fedavg"}
    assert all(r.info.status == "FINISHED" for r in children)
    assert cells["method=fedprox_like"].data.params["model/federation/mode"] == "fedprox_like"
    assert {row.method for row in result.rows} == {"fedprox_like", "fedavg"}
    scores = {row.method: row.mean for row in result.rows if (row.metric, row.domain) == ("score", "mean")}
    assert all(s >= 1.0 for s in scores.values()) and scores["fedprox_like"] != scores["fedavg"]  # an IS-like score


def test_no_module_outside_the_method_objects_branches_on_a_method_name() -> None:
    """What a method does is asked of its strategy and placement objects: no comparison with a method or
    placement name anywhere else in the package. Allowed: the plan, which validates and serialises its
    placement's name as data, and the comparison's default `ours` (HuSCF-GAN when it is among the methods)."""
    import ast

    names = set(known_strategies()) | {"split", "client", "md_gan", "central"}
    package = Path(__file__).resolve().parents[1] / "huscf_lightning"
    allowed = {("split/plan.py", "self.placement != 'split'"), ("compare/spec.py", "'kld_clustered' in names")}
    found = set()
    for path in package.rglob("*.py"):
        if path.name in ("strategy.py", "placement.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            values = [s.value for s in sides if isinstance(s, ast.Constant)]
            values += [e.value for s in sides if isinstance(s, (ast.Tuple, ast.List, ast.Set)) for e in s.elts
                       if isinstance(e, ast.Constant)]
            if any(isinstance(v, str) and v in names for v in values):
                found.add((str(path.relative_to(package)), ast.unparse(node)))
    assert found <= allowed, found - allowed
