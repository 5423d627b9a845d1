"""Small trained toy2d checkpoints (seconds to make), shared by the evaluation tests of one module."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mfkit.data.toy2d import toy_sample_labeled
from mfkit.recipe.build import build_backbone, build_modality, build_objective_for
from mfkit.recipe.loading import parse_recipe, recipe_to_yaml
from mfkit.train.checkpoint import Checkpoint, save_checkpoint


def make_checkpoint(folder: Path, kind: str = "meanflow", conditional: bool = False, steps: int = 60) -> Path:
    """Train a small MLP on eight Gaussians for ``steps`` steps and save it as a run's checkpoint."""
    data = {"name": f"eval-{kind}{'-cond' if conditional else ''}",
            "modality": {"name": "toy2d", "params": {"distribution": "eight_gaussians", "size": 2000,
                                                     "conditional": conditional}},
            "backbone": {"name": "mlp", "params": {"width": 64, "depth": 2}},
            "objective": {"kind": kind, "time_sampler": {"kind": "logit_normal", "mean": 0.0, "std": 1.0},
                          **({"r_neq_t_share": 0.5} if kind == "meanflow" else {})},
            "train": {"steps": steps, "batch_size": 256, "ema_decays": [], "device": "cpu"},
            "sample": {"steps": 1, "count": 400, "batch_size": 200}}
    recipe = parse_recipe(data, "test recipe")
    modality = build_modality(recipe)
    torch.manual_seed(0)
    model = build_backbone(recipe, modality)
    objective = build_objective_for(recipe, modality)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x, labels = toy_sample_labeled("eight_gaussians", 256, generator)
        out = objective(model, x, cond=labels if conditional else None, generator=generator)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return save_checkpoint(folder / recipe.name / "checkpoints",
                           Checkpoint(step=steps, recipe_yaml=recipe_to_yaml(recipe), model=model.state_dict()))


@pytest.fixture(scope="module")
def meanflow_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("runs"))
