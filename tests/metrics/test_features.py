"""Feature networks: deterministic from a seed, cached by content hash, retrained when the data change."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

from mfkit.metrics import dataset_digest, extract_features, train_feature_network


def _factory():
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4))


def _loss(module, batch):
    (x,) = batch
    return (module(x)[:, :2] - x.flip(1)).pow(2).mean()  # learn to swap the coordinates


def _data(seed):
    return TensorDataset(torch.randn(300, 2, generator=torch.Generator().manual_seed(seed)))


def _train(cache, data, seed=0):
    return train_feature_network(_factory, data, _loss, name="swap", steps=30, batch_size=64, seed=seed,
                                 cache_dir=cache)


def _same(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.module.state_dict().values(), b.module.state_dict().values()))


def test_training_is_deterministic_cached_and_redone_when_the_data_change(tmp_path):
    before = torch.random.get_rng_state()
    first = _train(tmp_path / "a", _data(0))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    elsewhere = _train(tmp_path / "b", _data(0))
    assert first.trained and elsewhere.trained and first.digest == elsewhere.digest
    assert _same(first, elsewhere)
    again = _train(tmp_path / "a", _data(0))
    assert not again.trained and again.path == first.path and _same(first, again)
    changed = _train(tmp_path / "a", _data(1))
    assert changed.trained and changed.path != first.path and not _same(first, changed)
    reseeded = _train(tmp_path / "a", _data(0), seed=1)
    assert reseeded.trained and not _same(first, reseeded)
    torch.manual_seed(0)
    untrained = _factory()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(5))
    trained_error = (extract_features(first.module, x)[:, :2] - x.flip(1)).pow(2).mean()
    assert trained_error < (untrained(x)[:, :2] - x.flip(1)).pow(2).mean().detach()
    assert not any(p.requires_grad for p in first.module.parameters()) and not first.module.training


def test_damaged_cache_file_is_retrained(tmp_path):
    first = _train(tmp_path, _data(0))
    first.path.write_bytes(b"not safetensors")
    again = _train(tmp_path, _data(0))
    assert again.trained and _same(first, again)


def test_digest_sees_values_shapes_and_labels():
    x = torch.zeros(10, 2)
    digests = {dataset_digest(TensorDataset(x)), dataset_digest(TensorDataset(x.reshape(10, 2, 1))),
               dataset_digest(TensorDataset(x + 1)), dataset_digest(TensorDataset(x, torch.arange(10)))}
    assert len(digests) == 4 and dataset_digest(TensorDataset(x)) == dataset_digest(TensorDataset(x.clone()))


_NET_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 4)

    def forward(self, x):
        return torch.{activation}(self.layer(x))


def loss(module, batch):
    (x,) = batch
    return (module(x)[:, :2] - x.flip(1)).pow(2).mean()


def sequential():
    return nn.Sequential(nn.Linear(2, 4), nn.Identity() if "{activation}" == "tanh" else nn.Sigmoid())
'''


def test_an_edited_forward_or_loss_trains_afresh_instead_of_loading_the_old_weights(tmp_path, monkeypatch):
    """Same parameter names and shapes, same data and settings, another forward: the cached weights were
    trained for the old code and must not be loaded for the new."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "edited_feature_net.py"

    def train(activation, factory="Net"):
        source.write_text(_NET_SOURCE.replace("{activation}", activation))
        sys.modules.pop("edited_feature_net", None)
        importlib.invalidate_caches()
        module = importlib.import_module("edited_feature_net")
        loss = module.loss if factory == "Net" else _loss  # the sequential case: only the factory is in that module
        return train_feature_network(getattr(module, factory), _data(0), loss, name="edited", steps=5,
                                     batch_size=64, cache_dir=tmp_path / "cache")

    first = train("tanh")
    assert first.trained and not train("tanh").trained  # unchanged code: loaded from the cache
    edited = train("sigmoid")
    assert edited.trained and edited.path != first.path
    # a factory of torch modules only (nn.Sequential): its own module's source is in the key
    plain = train("tanh", "sequential")
    assert plain.trained and not train("tanh", "sequential").trained and train("sigmoid", "sequential").trained
    sys.modules.pop("edited_feature_net", None)
