"""Shared test helpers: fake plugin distributions, the example plugin, small recipes."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = ROOT / "docs" / "example_plugin"


def write_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
    """Create an installed-looking distribution (dist-info with entry points) and its modules under site/."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {value}" for key, value in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


def install_example_plugin(target: Path) -> Path:
    """pip-install the example plugin package into target/ (no dependencies), as a third party would."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(EXAMPLE_PLUGIN)], check=True, capture_output=True)
    return target


def small_recipe(tmp_path: Path, name: str = "tiny", **train) -> dict:
    """A seconds-long toy2d recipe writing under tmp_path/runs."""
    settings = {"steps": 40, "batch_size": 64, "lr": 1e-3, "checkpoint_every": 20, "log_every": 10,
                "ema_decays": [0.9, 0.99], "preview_count": 64, "device": "cpu"}
    settings.update(train)
    return {
        "name": name,
        "modality": {"name": "toy2d", "params": {"distribution": "moons", "size": 1000}},
        "backbone": {"name": "mlp", "params": {"width": 32, "depth": 1}},
        "train": settings,
        "sample": {"count": 100, "batch_size": 50},
        "output_dir": str(tmp_path / "runs"),
    }


def write_recipe(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
