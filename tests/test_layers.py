"""The package's folders are layers: a module imports only modules of its own layer or of the layers below it,
anywhere in the file (a function-level import counts; only ``if TYPE_CHECKING:`` blocks, which never run, do
not). So there is no circle between layers and no lazy import that hides one. The README's Architecture
section lists the same order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "huscf_lightning"

# Bottom to top; a module belongs to the first entry whose prefix it starts with (longest prefixes first).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("errors", "compat", "collectives")),
    ("nets", ("nets",)),
    ("split", ("split",)),
    ("defences", ("privacy",)),  # the privacy defences: the aggregation and the engine apply them
    ("federation", ("federation",)),
    ("config", ("config",)),
    ("data", ("data",)),
    ("metrics", ("metrics",)),
    ("training", ("engine", "callbacks")),  # the module installs the callbacks; they log through engine.tracking
    ("attacks", ("privacy.attacks",)),  # the privacy attacks run on a trained model
    ("fit", ("cli.lightning_cli", "cli.preflight")),
    ("runs", ("compare", "sweep")),
    ("commands", ("cli", "__main__", "")),  # the command modules, the package's own __init__
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    """Index of ``module``'s layer (``module`` relative to the package, "" for the package itself)."""
    best = max(
        ((i, prefix) for i, (_, prefixes) in enumerate(LAYERS) for prefix in prefixes
         if module == prefix or module.startswith(prefix + ".") or prefix == ""),
        key=lambda found: len(found[1]),
    )
    return best[0]


def _imports(text: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, imported module relative to the package) of every import of the package in ``module``'s source."""
    tree = ast.parse(text)
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
               for n in ast.walk(node)}
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] if node.level > 1 else package
                target = ".".join([*base, *([node.module] if node.module else [])])
                found.append((node.lineno, target))
            elif node.module and node.module.startswith("huscf_lightning"):
                found.append((node.lineno, node.module.removeprefix("huscf_lightning").lstrip(".")))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.removeprefix("huscf_lightning").lstrip(".")) for a in node.names
                      if a.name.split(".")[0] == "huscf_lightning"]
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_its_own_layer_and_those_below(path: Path) -> None:
    module = _module_name(path)
    mine = _layer(module)
    upward = [(line, target, LAYERS[_layer(target)][0]) for line, target in _imports(path.read_text(), module, path.name == "__init__.py")
              if _layer(target) > mine]
    assert not upward, f"{module} (layer {LAYERS[mine][0]}) imports from above: {upward}"


def test_every_folder_of_the_package_has_a_layer() -> None:
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    named = {prefix.split(".")[0] for _, prefixes in LAYERS for prefix in prefixes if prefix}
    assert folders <= named, folders - named


def test_the_rule_sees_lazy_and_relative_imports_and_skips_type_checking_blocks() -> None:
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from huscf_lightning.engine.module import HuSCFGAN\n"
    assert _imports(hidden, "split.network") == []
    assert _imports("def f():\n    from huscf_lightning.engine import module\n", "split.network") == [(2, "engine")]
    assert _imports("from .plan import Cut\nfrom . import wire\n", "split.network") == [(1, "split.plan"), (2, "split")]
    assert _imports("from ..errors import X\n", "split", is_package=True) == [(1, "errors")]
    assert _layer("engine.module") > _layer("split.network")
    assert _layer("cli.compare") > _layer("compare.runner") > _layer("cli.lightning_cli") > _layer("callbacks")
