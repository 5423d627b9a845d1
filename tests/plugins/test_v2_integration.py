"""Plugin API v2 end to end: state that travels, any condition, any batch shape, errors caught before a
long run, shipped recipes and parameters, and v1 plugins that keep working. Each through the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from mfkit.plugins import registry
from tests.cli.util import run
from tests.helpers import ROOT, small_recipe, write_distribution, write_recipe

V2_PLUGIN = '''
import torch
from torch import nn
from torch.utils.data import Dataset
from pydantic import BaseModel, ConfigDict, Field
from mfkit.nn import MLPBackbone
from mfkit.plugins import BackboneSpec, Modality, ModalitySpec, VectorCondition

FITS = []


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(256, description="items")
    offset: float = Field(3.0, description="where the data sits")


class Dicts(Dataset):
    """Items as dicts; the data sit around `offset`, the condition is a 2-vector."""

    def __init__(self, n, offset, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g) + offset
        self.c = torch.rand(n, 2, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "cond": self.c[i]}


class Stateful(Modality):
    sample_shape = (4,)

    def __init__(self, params, context):
        self.params, self.context, self.mean = params, context, torch.zeros(4)

    def condition(self):
        return VectorCondition(2)

    def dataset(self, split="train"):
        data = Dicts(self.params.size, self.params.offset, self.context.seed + (split != "train"))
        data.x = data.x - self.mean
        return data

    def fit(self, dataset):
        FITS.append(self.context.purpose)
        self.mean = dataset.x.mean(dim=0)

    def state_dict(self):
        return {"mean": self.mean}

    def load_state_dict(self, state):
        self.mean = state["mean"]

    def collate(self):
        def stack(items):
            return {"x": torch.stack([i["x"] for i in items]), "cond": torch.stack([i["cond"] for i in items])}
        return stack

    def encode(self, raw):
        return torch.as_tensor(raw, dtype=torch.float32) - self.mean

    def decode(self, tensor):
        return (tensor.detach().cpu() + self.mean).numpy()

    def save(self, samples, out_dir, cond=None, *, kind="samples", step=None):
        import numpy as np
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / f"{kind}.npy", self.decode(samples))
        return [out_dir / f"{kind}.npy"]


class Pooled(nn.Module):
    """Returns (B, 1) for (B, D): broadcasts in the loss."""

    def __init__(self, shape):
        super().__init__()
        self.net = MLPBackbone(shape, width=8, depth=1)

    def forward(self, z, r, t, cond=None):
        return self.net(z, r, t)[:, :1]


MODALITY = ModalitySpec(name="stateful", description="dict items, fitted mean, vector condition",
                        factory=Stateful, params_model=Params)
POOLED = BackboneSpec(name="pooled", description="wrong shape", factory=lambda params, info, context: Pooled(info.sample_shape))
'''


@pytest.fixture
def v2_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "v2-plugin", {"mfkit.modalities": {"stateful": "v2mod:MODALITY"},
                                           "mfkit.backbones": {"pooled": "v2mod:POOLED"}}, {"v2mod": V2_PLUGIN})
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    yield site
    registry.refresh()


def stateful_recipe(tmp_path, **train):
    data = small_recipe(tmp_path, "stateful", **train)
    data["modality"] = {"name": "stateful", "params": {"size": 256}}
    data["objective"] = {"guidance": {"w_cfg": 0.5, "kappa": 0.3, "class_dropout": 0.2}}
    return write_recipe(tmp_path / "stateful.yaml", data)


def test_state_dict_batches_and_vector_conditions_through_train_and_sample(tmp_path, v2_site):
    import v2mod

    recipe = stateful_recipe(tmp_path, steps=20, checkpoint_every=10)
    trained = run("train", recipe, "-q")
    assert trained.exit_code == 0, trained.output
    assert v2mod.FITS == ["train"]  # fitted once, for the new run
    run_dir = tmp_path / "runs" / "stateful"
    for checkpoint in (run_dir / "checkpoints").glob("step-*.safetensors"):
        with safe_open(str(checkpoint), "pt") as f:
            mean = f.get_tensor("modality/mean")
        assert abs(mean.mean().item() - 3.0) < 0.2  # the fitted statistics travel in every checkpoint
    assert (run_dir / "previews").is_dir() and list((run_dir / "previews").glob("*/preview.npy"))
    sampled = run("sample", "--run", run_dir, "--cond", "0.2,0.9", "--n", "8")
    assert sampled.exit_code == 0, sampled.output
    assert v2mod.FITS == ["train"]  # sampling never refits
    unconditional = run("sample", "--run", run_dir, "--cond", "null", "--n", "8")
    assert unconditional.exit_code == 0, unconditional.output
    bad = run("sample", "--run", run_dir, "--cond", "0.2", "--n", "8")
    assert bad.exit_code == 2 and "2 number(s)" in bad.output and "Traceback" not in bad.output
    resumed = run("train", run_dir, "--resume", "train.steps=25", "-q")
    assert resumed.exit_code == 0, resumed.output
    assert v2mod.FITS == ["train"]  # resuming loads the state instead of refitting


def test_validate_catches_a_broadcastable_wrong_shape_before_training(tmp_path, v2_site):
    data = small_recipe(tmp_path, "broken")
    data["backbone"] = {"name": "pooled"}
    recipe = write_recipe(tmp_path / "broken.yaml", data)
    checked = run("validate", recipe)
    assert checked.exit_code == 2
    assert "backbone 'pooled' returned (2, 1) for z of shape (2, 2)" in checked.output and "broadcasts" in checked.output
    trained = run("train", recipe, "-q")
    assert trained.exit_code == 2 and "backbone 'pooled'" in trained.output
    assert not (tmp_path / "runs" / "broken").exists()  # nothing half-made left behind
    assert run("validate", recipe, "--no-check").exit_code == 0


def test_duplicate_names_need_the_package(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "shadow-plugin", {"mfkit.modalities": {"toy2d": "shadow:SPEC"}},
                       {"shadow": "from mfkit.builtin.toy2d import SPEC\n"})
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    try:
        recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path))
        result = run("validate", recipe)
        assert result.exit_code == 2
        assert "registered by several packages (mfkit 0.1.0, shadow-plugin 0.1)" in result.output
        data = small_recipe(tmp_path)
        data["modality"]["package"] = "mfkit"
        assert run("validate", write_recipe(tmp_path / "p.yaml", data)).exit_code == 0
    finally:
        registry.refresh()


def test_plugin_params_are_discoverable_and_recorded(tmp_path):
    shown = run("plugins", "--params", "toy2d")
    assert shown.exit_code == 0, shown.output
    assert "distribution" in shown.output and "checkerboard" in shown.output and "which 2-D" in shown.output
    typo = run("plugins", "--params", "toy2")
    assert typo.exit_code == 2 and "Did you mean 'toy2d'" in typo.output
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path))
    show = run("validate", recipe, "--show", "--no-check")
    assert "conditional: false" in show.output and "seed: 0" in show.output  # defaults filled in
    bad = small_recipe(tmp_path)
    bad["modality"]["params"]["distributoin"] = "moons"
    result = run("validate", write_recipe(tmp_path / "b.yaml", bad))
    assert result.exit_code == 2 and "distributoin" in result.output and "did you mean 'distribution'" in result.output


def test_guidance_message_names_the_plugin_not_a_builtin(tmp_path):
    data = small_recipe(tmp_path)
    data["objective"] = {"guidance": {}}
    result = run("validate", write_recipe(tmp_path / "g.yaml", data))
    assert result.exit_code == 2 and "modality 'toy2d'" in result.output and "e.g. toy2d" not in result.output


@pytest.mark.slow
def test_a_v1_plugin_trains_and_samples_unchanged(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(ROOT / "tests" / "plugins" / "v1_plugin")], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    recipe = ROOT / "tests" / "plugins" / "v1_plugin" / "recipe.yaml"
    trained = subprocess.run([sys.executable, "-m", "mfkit", "train", str(recipe), f"output_dir={tmp_path / 'runs'}", "-q"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr
    sampled = subprocess.run([sys.executable, "-m", "mfkit", "sample", "--run", str(tmp_path / "runs" / "sines_v1"),
                              "--cond", "mid"], capture_output=True, text=True, env=env, timeout=120)
    assert sampled.returncode == 0, sampled.stderr
    assert list((tmp_path / "runs" / "sines_v1" / "samples").glob("*/signals.png"))


def test_toy2d_trains_exactly_as_before(tmp_path):
    """Same seed, same figures as mfkit before plugin API v2 (values recorded from that release)."""
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path, steps=20, log_every=10))
    assert run("train", recipe, "-q").exit_code == 0
    lines = [json.loads(line) for line in (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()]
    figures = {line["step"]: (round(line["loss"], 5), round(line["mse"], 5)) for line in lines if "mse" in line}
    assert figures == TOY2D_BEFORE


# (loss, mse) at steps 10 and 20, from mfkit 0.1.0 as landed before plugin API v2 (commit 11c5d65)
TOY2D_BEFORE = {10: (0.99132, 2.85407), 20: (0.98858, 2.39536)}


BROKEN_DATA = '''
import torch
from torch.utils.data import Dataset
from mfkit.builtin.toy2d import Toy2d, Toy2dParams
from mfkit.plugins import ModalitySpec


class Words(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return "not a tensor"


class Broken(Toy2d):
    def dataset(self, split="train"):
        return Words()


SPEC = ModalitySpec(name="brokendata", description="items are strings", factory=Broken, params_model=Toy2dParams)
'''


def test_a_broken_data_set_is_caught_in_seconds(tmp_path, monkeypatch):
    site = tmp_path / "site"
    write_distribution(site, "broken-data", {"mfkit.modalities": {"brokendata": "brokendata:SPEC"}},
                       {"brokendata": BROKEN_DATA})
    monkeypatch.syspath_prepend(str(site))
    registry.refresh()
    try:
        data = small_recipe(tmp_path, "words")
        data["modality"] = {"name": "brokendata"}
        result = run("train", write_recipe(tmp_path / "w.yaml", data), "-q")
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "modality 'brokendata'" in result.output and "not a tensor" in result.output
        assert not (tmp_path / "runs" / "words").exists()
    finally:
        registry.refresh()


def test_mfkit_warning_filters_stay_inside_mfkit():
    import warnings

    import mfkit
    from mfkit.nn import MLPBackbone

    before = list(warnings.filters)
    model = MLPBackbone(2, width=8, depth=1)
    x = torch.randn(4, 2)
    mfkit.MeanFlow(r_neq_t_share=1.0)(model, x).loss.backward()
    assert warnings.filters == before
