"""Latent shards with a tiny randomly initialised VAE of our own: contract, fitted scale, VAE decoding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from mfkit.plugins import PluginContext
from mfkit.testing import check_modality_spec
from mfkit_image.data.latents import LatentFolderError
from mfkit_image.latent_modality import SPEC, LatentParams


class TinyVAE(nn.Module):
    """Pixels (B, 3, 16, 16) <-> latents (B, 4, 4, 4); random weights, like a real VAE's shapes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Conv2d(3, 4, 4, stride=4)
        self.decoder = nn.ConvTranspose2d(4, 3, 4, stride=4)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return 3.0 * self.encoder(pixels)  # latents far from unit variance, as with real VAEs

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.decoder(latents))


@pytest.fixture(scope="module")
def vae():
    return TinyVAE().eval()


@pytest.fixture
def latent_folder(tmp_path, vae):
    folder = tmp_path / "latents"
    folder.mkdir()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for k in range(2):
            latents = vae.encode(torch.rand(10, 3, 16, 16, generator=generator) * 2 - 1)
            save_file({"latents": latents, "labels": torch.arange(10) % 3}, str(folder / f"shard{k}.safetensors"))
    (folder / "classes.txt").write_text("apple\nbanana\ncherry\n")
    return folder


def test_contract_and_fitted_scale(tmp_path, latent_folder, context):
    modality = check_modality_spec(SPEC, tmp_path / "out", {"path": str(latent_folder), "val_fraction": 0.2}, context)
    assert modality.sample_shape == (4, 4, 4) and modality.class_names == ["apple", "banana", "cherry"]
    assert len(modality.dataset("train")) == 16 and len(modality.dataset("val")) == 4
    train = torch.stack([modality.dataset("train")[i][0] for i in range(16)])
    everything = [modality.dataset(s)[i][0] for s in ("train", "val") for i in range(len(modality.dataset(s)))]
    assert torch.stack(everything).std().item() == pytest.approx(1.0, abs=0.15) and train.shape[0] == 16
    state = modality.state_dict()
    assert set(state) == {"latent_scale", "latent_shape", "class_names_json", "split_scheme"}
    assert 0.05 < float(state["latent_scale"]) < 1


def test_scale_travels_and_explicit_scale_wins(latent_folder):
    trained = SPEC.build(LatentParams(path=str(latent_folder)), PluginContext(purpose="train"))
    trained.fit(trained.dataset("train"))
    sampler = SPEC.build(LatentParams(path=str(latent_folder)), PluginContext(purpose="sample"))
    sampler.load_state_dict({"latent_scale": torch.tensor(0.5, dtype=torch.float64)})
    assert sampler.scale == 0.5 and trained.scale != 0.5
    fixed = SPEC.build(LatentParams(path=str(latent_folder), scale=0.18215), PluginContext())
    raw = fixed.shards.read(0)
    assert torch.allclose(fixed.dataset("train")[0][0], raw * 0.18215)
    assert torch.allclose(fixed.decode(fixed.encode(raw)[None])[0], raw)


def test_sampling_needs_no_latent_folder(tmp_path, latent_folder):
    trained = SPEC.build(LatentParams(path=str(latent_folder)), PluginContext(purpose="train"))
    trained.fit(trained.dataset("train"))
    state = trained.state_dict()
    gone = latent_folder.rename(tmp_path / "moved")
    sampler = SPEC.build(LatentParams(path=str(latent_folder)), PluginContext(purpose="sample"))
    sampler.load_state_dict(state)
    assert sampler.sample_shape == (4, 4, 4) and sampler.label_of("cherry") == 2 and sampler.scale == trained.scale
    assert (tmp_path / "s" / "latents.safetensors") in sampler.save(torch.randn(2, 4, 4, 4), tmp_path / "s") and gone


def test_npy_shards_without_labels(tmp_path, context):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "a.npy", np.random.default_rng(0).normal(size=(5, 4, 2, 2)).astype(np.float32))
    np.save(folder / "b.npy", np.random.default_rng(1).normal(size=(3, 4, 2, 2)).astype(np.float32))
    modality = check_modality_spec(SPEC, tmp_path / "out", {"path": str(folder)}, context)
    assert modality.class_names is None and len(modality.dataset("train")) == 8
    np.save(folder / "b.labels.npy", np.zeros(3, np.int64))
    with pytest.raises(LatentFolderError, match="some shards"):
        SPEC.build(LatentParams(path=str(folder)), context).dataset("train")


def test_samples_decoded_by_an_exported_local_vae(tmp_path, latent_folder, vae):
    program = torch.export.export(vae, (torch.randn(2, 4, 4, 4),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(program, str(tmp_path / "decoder.pt2"))
    params = LatentParams(path=str(latent_folder), vae={"kind": "export", "path": str(tmp_path / "decoder.pt2")},
                          save_individual=True)
    modality = SPEC.build(params, PluginContext())
    samples = torch.randn(6, 4, 4, 4)
    files = modality.save(samples, tmp_path / "s", torch.tensor([0, 1, 2, 0, 1, 2]))
    names = {f.name for f in files}
    assert {"latents.safetensors", "grid.png", "samples.npz", "00001_banana.png"} <= names
    single = Image.open(tmp_path / "s" / "images" / "00000_apple.png")
    assert single.size == (16, 16) and single.mode == "RGB"
    expected = ((vae(samples[:1] / modality.scale)[0] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0)
    assert (np.asarray(single).astype(int) - expected.numpy().astype(int)).__abs__().max() <= 1


def test_python_vae_and_missing_vae_file(tmp_path, latent_folder, vae):
    from mfkit_image.latent_modality import LatentModality
    modality = LatentModality(LatentParams(path=str(latent_folder)), PluginContext(), vae=vae)
    assert (tmp_path / "p" / "grid.png") in modality.save(torch.randn(2, 4, 4, 4), tmp_path / "p")
    missing = SPEC.build(LatentParams(path=str(latent_folder), vae={"kind": "export", "path": str(tmp_path / "no.pt2")}),
                         PluginContext())
    with pytest.raises(FileNotFoundError, match="no VAE at"):
        missing.save(torch.randn(1, 4, 4, 4), tmp_path / "q")


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(LatentFolderError, match="does not exist"):
        SPEC.build(LatentParams(path=str(tmp_path / "nothing")), PluginContext()).dataset("train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LatentFolderError, match="no latent shards"):
        SPEC.build(LatentParams(path=str(tmp_path / "empty")), PluginContext()).sample_shape


def test_held_out_latents_stay_held_out_as_shards_are_added(tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    rng = np.random.default_rng(0)
    np.save(folder / "b.npy", rng.normal(size=(12, 1, 2, 2)).astype(np.float32))
    params = LatentParams(path=str(folder), val_fraction=0.3, scale=1.0)
    items = lambda data: {tuple(data[i].flatten().tolist()) for i in range(len(data))}  # noqa: E731
    before = SPEC.build(params, PluginContext())
    val, train = items(before.dataset("val")), items(before.dataset("train"))
    np.save(folder / "a.npy", rng.normal(size=(5, 1, 2, 2)).astype(np.float32))  # sorts first: shifts every index
    after = SPEC.build(params, PluginContext())
    assert val <= items(after.dataset("val")) and train <= items(after.dataset("train"))


def _npy_folder(folder, labels=None):
    folder.mkdir()
    np.save(folder / "a.npy", np.random.default_rng(0).normal(size=(6, 1, 2, 2)).astype(np.float32))
    if labels is not None:
        np.save(folder / "a.labels.npy", np.asarray(labels, np.int64))
    return folder


@pytest.mark.parametrize("text, message", [
    ("tench\n\ngoldfish\nshark\n", "line 2 is blank"),  # dropping it made label 1 'goldfish'
    ("tench\ngoldfish\ntench\n", "line 3 repeats 'tench'"),
])
def test_classes_txt_blank_or_repeated_names_are_refused(tmp_path, text, message):
    folder = _npy_folder(tmp_path / "npy", [0, 1, 2, 0, 1, 2])
    (folder / "classes.txt").write_text(text)
    with pytest.raises(LatentFolderError, match=f"classes.txt {message}"):
        SPEC.build(LatentParams(path=str(folder)), PluginContext()).class_names


def test_classes_txt_trailing_blank_lines_are_ignored(tmp_path):
    folder = _npy_folder(tmp_path / "npy", [0, 1, 2, 0, 1, 2])
    (folder / "classes.txt").write_text("tench\ngoldfish\nshark\n\n")
    assert SPEC.build(LatentParams(path=str(folder)), PluginContext()).class_names == ["tench", "goldfish", "shark"]


def test_classes_txt_beside_unlabelled_shards_is_refused(tmp_path):
    folder = _npy_folder(tmp_path / "npy")
    (folder / "classes.txt").write_text("x\ny\n")
    with pytest.raises(LatentFolderError, match="carry no labels.*conditional: false"):
        SPEC.build(LatentParams(path=str(folder)), PluginContext()).condition()
    assert SPEC.build(LatentParams(path=str(folder), conditional=False), PluginContext()).condition() is None


def test_unlabelled_latents_sample_without_the_folder(tmp_path):
    folder = _npy_folder(tmp_path / "npy")
    trained = SPEC.build(LatentParams(path=str(folder)), PluginContext())
    trained.fit(trained.dataset("train"))
    state = trained.state_dict()
    folder.rename(tmp_path / "moved")
    sampler = SPEC.build(LatentParams(path=str(folder)), PluginContext(purpose="sample"))
    sampler.load_state_dict(state)
    assert sampler.condition() is None and sampler.sample_shape == (1, 2, 2)
