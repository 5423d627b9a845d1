"""The split scheme in the state: a run made before it was recorded keeps the split and ``limit`` subset it
trained with (the expected lists were produced by the code of commit 7ae0389, before the hash split);
a new run records the hash split and keeps it; the digits' split is pinned."""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mfkit.runs import load_modality_state
from mfkit_image.data.digits import load_digits_pictures
from mfkit_image.data.sets import held_out_split
from mfkit_image.latent_modality import SPEC as LATENTS, LatentParams
from mfkit_image.modality import SPEC, ImageParams

from image_testutil import grey_list, write_greys

OLD_RUN = "made before mfkit-image recorded its split scheme"


def build(context, **params):
    return SPEC.build(ImageParams(**params), context)


def names_state(names) -> dict[str, torch.Tensor]:
    """The state the code before the split scheme saved for a conditional folder (its class names only)."""
    return {"class_names_json": torch.tensor(list(json.dumps(names).encode()), dtype=torch.uint8)}


def resumed(context, state, **params):
    """A modality rebuilt as mfkit rebuilds one (resume, eval, sample): the run's state loaded first."""
    modality = build(context, **params)
    load_modality_state(modality, state, "run.safetensors")
    return modality


def quiet_greys(modality, split) -> list[int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return grey_list(modality.dataset(split))


@pytest.fixture
def pets(tmp_path):
    write_greys(tmp_path / "pets", 10)
    return {"source": "folder", "path": str(tmp_path / "pets"), "resolution": 4, "channels": 1,
            "val_fraction": 0.3}


def test_an_old_class_folder_run_keeps_its_split_and_records_it(context, pets):
    old = resumed(context, names_state(["cat", "dog"]), **pets)
    with pytest.warns(UserWarning, match=OLD_RUN):
        val = grey_list(old.dataset("val"))
    assert val == [4, 8, 12, 132, 134, 146]
    assert grey_list(old.dataset("train")) == [0, 2, 6, 10, 14, 16, 18, 128, 130, 136, 138, 140, 142, 144]
    state = old.state_dict()
    assert int(state["split_scheme"]) == 1  # saved again: still the old run's split
    assert quiet_greys(resumed(context, state, **pets), "val") == val


def test_a_new_run_records_the_hash_split_and_a_resume_keeps_it(context, pets):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new run says nothing about old splits
        fresh = build(context, **pets)
        val = grey_list(fresh.dataset("val"))
    assert val == [0, 6, 10, 16, 128, 132, 144]
    state = fresh.state_dict()
    assert int(state["split_scheme"]) == 2
    again = resumed(context, state, **pets)
    assert grey_list(again.dataset("val")) == val and int(again.state_dict()["split_scheme"]) == 2


def test_an_old_flat_conditional_folder_run_keeps_its_split(tmp_path, context):
    for k in range(12):
        path = tmp_path / "flat" / f"{k:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 10 * k, np.uint8)).save(path)
    params = {"source": "folder", "path": str(tmp_path / "flat"), "resolution": 4, "channels": 1,
              "val_fraction": 0.3}
    assert quiet_greys(resumed(context, names_state([]), **params), "val") == [20, 40, 70, 90]
    assert quiet_greys(build(context, **params), "val") == [0, 20, 80, 100, 110]


def test_old_runs_keep_the_first_n_items_as_their_limit(tmp_path, context, pets):
    del pets["val_fraction"]
    old = resumed(context, names_state(["cat", "dog"]), **pets, limit=6)
    assert quiet_greys(old, "train") == [0, 2, 4, 6, 8, 10]
    assert quiet_greys(build(context, **pets, limit=6), "train") == [4, 8, 12, 132, 134, 146]
    # an unconditional folder's old state was empty: mfkit still loads it, and it still means "old run"
    flat = {**pets, "conditional": False}
    assert quiet_greys(resumed(context, {}, **flat, limit=5), "train") == [0, 2, 4, 6, 8]
    assert quiet_greys(build(context, **flat, limit=5), "train") == [4, 8, 12, 134, 146]


def test_an_old_run_with_corrupt_files_keeps_its_cached_and_on_access_splits(tmp_path, context):
    write_greys(tmp_path / "bad", 10, classes=("cat",))
    (tmp_path / "bad" / "cat" / "000b_bad.png").write_bytes(b"not a png")
    (tmp_path / "bad" / "cat" / "004b_bad.png").write_bytes(b"nor this")
    params = {"source": "folder", "path": str(tmp_path / "bad"), "resolution": 4, "channels": 1,
              "val_fraction": 0.3}
    cached = resumed(context, names_state(["cat"]), **params)  # permuted over the decoded pictures
    assert quiet_greys(cached, "val") == [4, 8, 12]
    assert quiet_greys(cached, "train") == [0, 2, 6, 10, 14, 16, 18]
    on_access = resumed(context, names_state(["cat"]), **params, cache_mb=0)  # over all files
    assert quiet_greys(on_access, "val") == [2, 6, 10, 14]
    assert quiet_greys(on_access, "train") == [0, 4, 4, 8, 12, 12, 16, 18]


def test_data_read_before_the_state_is_split_again(context, pets):
    modality = build(context, **pets)
    assert grey_list(modality.dataset("val")) == [0, 6, 10, 16, 128, 132, 144]
    modality.load_state_dict(names_state(["cat", "dog"]))
    with pytest.warns(UserWarning, match=OLD_RUN):
        assert grey_list(modality.dataset("val")) == [4, 8, 12, 132, 134, 146]


def test_a_scheme_from_a_newer_version_is_refused(context, pets):
    with pytest.raises(ValueError, match="split_scheme 3 .* newer version"):
        build(context, **pets).load_state_dict({"split_scheme": torch.tensor(3)})


def _latents(folder):
    """Two shards; row r of shard s holds 100 s + r everywhere (so items can be told apart)."""
    folder.mkdir()
    for shard, count in ((0, 9), (1, 7)):
        rows = np.arange(count, dtype=np.float32)[:, None, None, None]
        np.save(folder / f"s{shard}.npy", np.full((count, 1, 2, 2), 100 * shard, np.float32) + rows)
        np.save(folder / f"s{shard}.labels.npy", np.arange(count, dtype=np.int64) % 2)
    return LatentParams(path=str(folder), val_fraction=0.25, scale=1.0)


def _values(data) -> list[int]:
    return [round(float(data[i][0][0, 0, 0])) for i in range(len(data))]


def test_an_old_latent_run_keeps_its_split_and_a_new_one_keeps_the_hash_split(tmp_path, context):
    params = _latents(tmp_path / "latents")
    fresh = LATENTS.build(params, context)
    state = fresh.state_dict()
    assert int(state["split_scheme"]) == 2 and _values(fresh.dataset("val")) == [4, 5, 6, 7]
    again = LATENTS.build(params, context)
    load_modality_state(again, state, "run.safetensors")
    assert _values(again.dataset("val")) == [4, 5, 6, 7]
    del state["split_scheme"]  # what the code before it saved: latent_scale, latent_shape, class_names_json
    assert sorted(state) == ["class_names_json", "latent_scale", "latent_shape"]
    old = LATENTS.build(params, context)
    load_modality_state(old, state, "run.safetensors")
    with pytest.warns(UserWarning, match=OLD_RUN):
        assert _values(old.dataset("val")) == [5, 7, 8, 100]
    saved = old.state_dict()
    assert int(saved["split_scheme"]) == 1
    later = LATENTS.build(params, context)
    load_modality_state(later, saved, "run.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _values(later.dataset("val")) == [5, 7, 8, 100]


def _digest(data) -> str:
    digest = hashlib.sha256()
    for i in range(len(data)):
        item = data[i]
        for part in item if isinstance(item, tuple) else (item,):
            digest.update(part.numpy().tobytes())
    return digest.hexdigest()


def test_the_digits_split_is_pinned(context):
    """The held-out digits behind the published numbers, as commit 7ae0389 chose them; old and new runs
    alike, with no word about split schemes."""
    _, labels = load_digits_pictures()
    held = held_out_split(labels, len(labels), 0.2, 0)[1]
    assert hashlib.sha256(np.asarray(held, np.int64).tobytes()).hexdigest() == (
        "f71c9ddf317ebe278f01acb013a7eed702a00236a3733c9eefc19ea0e7aefeee")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for state in (None, {}):
            for conditional, expected in ((True, "0c973a02784380b93060a7391990343935f2435d4e08231f989fd5af791afd5b"),
                                          (False, "e307f7cbda269cf008fdc9e6980c172bf938c8530123ebdadd95d2a77475df72")):
                modality = build(context, conditional=conditional)
                if state is not None:
                    load_modality_state(modality, state, "run.safetensors")
                val = modality.dataset("val")
                assert len(val) == 359 and _digest(val) == expected


def test_the_digits_limit_follows_the_runs_scheme(context):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = resumed(context, {}, limit=100)  # a digits run's state was empty before the scheme
        assert _digest(old.dataset("train")) == "15d060bf420491544ae48de711d7552b5433279d1f395e32956292f3f817c492"
        new = build(context, limit=100)
        assert _digest(new.dataset("train")) == "a9b9ca602645cb05c8f0d43ad54aa2e2e579567edee2eb43f71e80cd32667999"
        assert int(new.state_dict()["split_scheme"]) == 2


def test_latents_taken_before_the_state_are_split_again(tmp_path, context):
    params = _latents(tmp_path / "latents")
    modality = LATENTS.build(params, context)
    state = modality.state_dict()
    assert _values(modality.dataset("val")) == [4, 5, 6, 7]
    del state["split_scheme"]
    modality.load_state_dict(state)
    with pytest.warns(UserWarning, match=OLD_RUN):
        assert _values(modality.dataset("val")) == [5, 7, 8, 100]


def _digits_recipe(tmp_path, steps):
    from mfkit.recipe.loading import parse_recipe

    return parse_recipe({
        "name": "old-digits", "output_dir": str(tmp_path / "runs"),
        "modality": {"name": "image", "params": {"source": "digits", "limit": 64}},
        "backbone": {"name": "unet", "params": {"channels": 8, "channel_mult": [1], "num_blocks": 1,
                                                "attn_resolutions": []}},
        "objective": {"kind": "meanflow"},
        "train": {"steps": steps, "batch_size": 8, "checkpoint_every": 1, "ema_decays": [0.9], "preview_count": 10,
                  "device": "cpu", "log_every": 1},
        "sample": {"count": 10, "batch_size": 10},
    })


def test_the_trainer_resumes_an_old_digits_run_with_its_first_n_limit(tmp_path):
    """A run whose checkpoints hold no split_scheme (an empty modality state, as before) resumes with the
    first N digits as its ``limit`` and saves split_scheme 1 again; a new run records and keeps 2."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from mfkit.train.trainer import Trainer

    def scheme(step):
        with safe_open(str(tmp_path / "runs" / "old-digits" / "checkpoints" / f"step-{step:07d}.safetensors"),
                       "pt") as stored:
            return int(stored.get_tensor("modality/split_scheme")) if "modality/split_scheme" in stored.keys() \
                else None

    Trainer(_digits_recipe(tmp_path, 1), progress=False).fit()
    assert scheme(1) == 2
    resumed_new = Trainer(_digits_recipe(tmp_path, 2), resume=True, progress=False)
    resumed_new.fit()
    assert scheme(2) == 2 and _digest(resumed_new.dataset) == _digest(build(None, limit=64).dataset("train"))
    path = tmp_path / "runs" / "old-digits" / "checkpoints" / "step-0000002.safetensors"
    with safe_open(str(path), "pt") as stored:  # strip the key: the checkpoint the code before it wrote
        metadata, tensors = stored.metadata(), {k: stored.get_tensor(k) for k in stored.keys()}
    del tensors["modality/split_scheme"]
    save_file(tensors, str(path), metadata=metadata)
    resumed_old = Trainer(_digits_recipe(tmp_path, 3), resume=True, progress=False)
    resumed_old.fit()
    first_64 = build(None, limit=64)
    first_64.load_state_dict({})
    assert scheme(3) == 1 and _digest(resumed_old.dataset) == _digest(first_64.dataset("train"))
