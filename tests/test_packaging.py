"""The wheel carries the configs and installs callbacks/ as huscf_lightning.callbacks (no top-level module)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_configs_and_maps_callbacks_into_the_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("huscf_lightning-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "huscf_lightning/configs/default.yaml",
        "huscf_lightning/configs/profiles/paper.yaml",
        "huscf_lightning/configs/scenarios/paper/scenario6.yaml",
        "huscf_lightning/configs/scenarios/offline/offline4.yaml",
        "huscf_lightning/callbacks/__init__.py",
        "huscf_lightning/callbacks/aggregation.py",
        "huscf_lightning/split/network.py",
    ):
        assert expected in names, expected
    assert not any(name.startswith("callbacks/") or name.startswith("configs/") for name in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "huscf-lightning = huscf_lightning.__main__:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
