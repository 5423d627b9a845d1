"""The image modality: embedded digits, folders (classes, corrupt files, cache), grids, state."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from mfkit.plugins import PluginContext
from mfkit.testing import check_modality_spec
from mfkit_image.data import folder as folders
from mfkit_image.modality import SPEC, ImageParams

from image_testutil import grey_list, write_greys, write_picture


def build(context, **params):
    return SPEC.build(ImageParams(**params), context)


@pytest.mark.parametrize("conditional", [True, False])
def test_digits_contract_and_split(tmp_path, context, conditional):
    modality = check_modality_spec(SPEC, tmp_path, {"conditional": conditional}, context)
    train, val = modality.dataset("train"), modality.dataset("val")
    assert modality.sample_shape == (1, 8, 8)
    assert len(train) + len(val) == 1797 and 340 < len(val) < 380
    if conditional:
        labels = torch.stack([val[i][1] for i in range(len(val))])
        assert torch.bincount(labels).min() >= 34  # stratified: every class held out
        x = train[0][0]
    else:
        x = train[0]
    assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and x.max() > 0.5


def test_digits_resized_to_rgb(context):
    modality = build(context, resolution=16, channels=3, conditional=False)
    x = modality.dataset("train")[0]
    assert x.shape == (3, 16, 16) and torch.equal(x[0], x[1])


def test_flip_adds_mirrored_copies(context):
    plain, flipped = build(context), build(context, flip=True)
    n = len(plain.dataset("train"))
    assert len(flipped.dataset("train")) == 2 * n and len(flipped.dataset("val")) == len(plain.dataset("val"))
    x, label = flipped.dataset("train")[n + 5]
    assert torch.equal(x, plain.dataset("train")[5][0].flip(-1)) and label == plain.dataset("train")[5][1]


def test_folder_with_classes_skips_corrupt_files(tmp_path, class_folder, context):
    with pytest.warns(UserWarning) as caught:
        modality = check_modality_spec(SPEC, tmp_path / "out", {"source": "folder", "path": str(class_folder),
                                                               "resolution": 8, "val_fraction": 0.3}, context)
    messages = [str(w.message) for w in caught]
    assert any("broken.png" in m for m in messages)
    assert any("skipped 1 unreadable of 8" in m for m in messages)
    assert modality.class_names == ["cats", "dogs"] and modality.sample_shape == (3, 8, 8)
    items = [modality.dataset(s)[i] for s in ("train", "val") for i in range(len(modality.dataset(s)))]
    assert len(items) == 7
    for x, label in items:  # cats are red, dogs blue: labels follow the pictures
        assert (x[0].mean() > x[2].mean()) == (label == 0)


def test_folder_cache_is_reused(class_folder, context, monkeypatch):
    params = {"source": "folder", "path": str(class_folder), "resolution": 8}
    with pytest.warns(UserWarning):
        first = build(context, **params).dataset("train")
    monkeypatch.setattr(folders, "decode_all", lambda *a, **k: pytest.fail("decoded again instead of the cache"))
    with pytest.warns(UserWarning, match="broken.png"):  # the cache still names the skipped file
        second = build(context, **params).dataset("train")
    assert len(first) == len(second) == 7 and torch.equal(first[3][0], second[3][0])


def test_large_folder_decoded_on_access(class_folder, context):
    modality = build(context, source="folder", path=str(class_folder), resolution=8, cache_mb=0)
    data = modality.dataset("train")
    assert len(data) == 8  # the corrupt file is found only when read
    with pytest.warns(UserWarning, match="broken.png"):
        items = [data[i] for i in range(len(data))]
    assert all(x.shape == (3, 8, 8) for x, _ in items)
    assert all((x[0].mean() > x[2].mean()) == (label == 0) for x, label in items)
    assert not list((context.cache_dir / "image").glob("folder-*")) if (context.cache_dir / "image").exists() else True


def test_unlabelled_folder_and_val_folder(tmp_path, context):
    for i in range(4):
        write_picture(tmp_path / "flat" / f"{i}.png", size=(20, 40), mode="L")
        write_picture(tmp_path / "flat_val" / f"{i}.png", mode="L")
    modality = build(context, source="folder", path=str(tmp_path / "flat"), val_path=str(tmp_path / "flat_val"),
                     resolution=16, channels=1)
    assert modality.class_names is None and modality.splits == ("train", "val")
    assert modality.dataset("train")[0].shape == (1, 16, 16) and len(modality.dataset("val")) == 4


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "holds no PNG/JPEG/WebP"),
    (lambda root: (root.mkdir(), (root / "a.txt").write_text("x")), "holds no PNG/JPEG/WebP"),
])
def test_missing_or_empty_folder_is_a_clear_error(tmp_path, context, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(folders.ImageFolderError, match=message):
        build(context, source="folder", path=str(root), conditional=False).dataset("train")


def test_all_files_corrupt_is_an_error(tmp_path, context):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"nope")
    with pytest.raises(folders.ImageFolderError, match="none of the 1"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build(context, source="folder", path=str(tmp_path / "bad")).dataset("train")


def test_params_are_checked():
    with pytest.raises(ValueError, match="needs path"):
        ImageParams(source="folder")
    with pytest.raises(ValueError, match="official 10,000"):
        ImageParams(source="mnist", val_fraction=0.1)


def test_encode_accepts_pictures_paths_and_arrays(tmp_path, context):
    modality = build(context, resolution=8, channels=3)
    path = write_picture(tmp_path / "p.png", size=(32, 16))
    from_path = modality.encode(path)
    assert from_path.shape == (3, 8, 8)
    assert torch.equal(modality.encode(Image.open(path)), from_path)
    assert modality.encode(np.zeros((5, 5), np.uint8)).eq(-1).all()
    assert modality.encode(np.ones((5, 5, 3), np.float32)).eq(1).all()


def test_grid_rows_by_class_and_single_pngs(tmp_path, context):
    modality = build(context, save_individual=True)
    samples = torch.rand(23, 1, 8, 8) * 2 - 1
    labels = torch.arange(23) % 10
    files = modality.save(samples, tmp_path / "s", labels)
    grid = Image.open(tmp_path / "s" / "grid.png")
    assert grid.height > 10 * 8 * 6 and grid.width < 16 * 60 + 60  # ten class rows of <= 3 upscaled digits
    singles = sorted((tmp_path / "s" / "images").glob("*.png"))
    assert len(singles) == 23 and singles[3].name == "00003_3.png" and Image.open(singles[0]).size == (8, 8)
    stored = np.load(tmp_path / "s" / "samples.npz")
    assert stored["images"].shape == (23, 8, 8, 1) and (stored["labels"] == labels.numpy()).all()
    assert set(files) >= {tmp_path / "s" / "grid.png", tmp_path / "s" / "samples.npz"}
    previews = modality.save(samples, tmp_path / "p", labels, kind="preview", step=10)
    assert not (tmp_path / "p" / "images").exists() and len(previews) == 2


def test_folder_class_names_travel_in_the_state(class_folder, context):
    with pytest.warns(UserWarning):
        trained = build(context, source="folder", path=str(class_folder), resolution=8)
        trained.fit(trained.dataset("train"))
    state = trained.state_dict()
    moved = class_folder.rename(class_folder.parent / "elsewhere")
    sampler = SPEC.build(ImageParams(source="folder", path=str(class_folder), resolution=8),
                         PluginContext(purpose="sample"))
    sampler.load_state_dict(state)
    assert sampler.class_names == ["cats", "dogs"] and sampler.label_of("dogs") == 1 and moved.exists()


def test_grid_wraps_many_samples_of_one_class(tmp_path):
    from mfkit_image.grid import picture_grid

    pictures = np.zeros((40, 8, 8, 1), np.uint8)
    one_class = picture_grid(pictures, tmp_path / "a.png", np.full(40, 3), [str(d) for d in range(10)], 16)
    mixed = picture_grid(pictures, tmp_path / "b.png", np.arange(40) % 2, [str(d) for d in range(10)], 16)
    rows = lambda path: round((Image.open(path).height - 12) / (8 * 6 + 2))  # noqa: E731 - title, 48 px cells
    assert rows(one_class) == 3 and rows(mixed) == 4


def test_changed_class_folders_are_refused_on_resume(tmp_path, context):
    root = tmp_path / "pets"
    for name in ("cat", "dog"):
        write_picture(root / name / "0.png")
    trained = build(context, source="folder", path=str(root), resolution=8)
    trained.dataset("train")
    state = trained.state_dict()
    write_picture(root / "bird" / "0.png")  # sorts first: cats would be labelled 1, "dog"
    resumed = build(context, source="folder", path=str(root), resolution=8)
    resumed.load_state_dict(state)
    with pytest.raises(folders.ImageFolderError, match=r"added \['bird'\].*train a new run"):
        resumed.dataset("train")


def test_val_folder_with_other_classes_is_refused(tmp_path, context):
    for name in ("cat", "dog"):
        write_picture(tmp_path / "train" / name / "0.png")
    write_picture(tmp_path / "val" / "cat" / "0.png")
    modality = build(context, source="folder", path=str(tmp_path / "train"), val_path=str(tmp_path / "val"),
                     resolution=8)
    with pytest.raises(folders.ImageFolderError, match=r"missing \['dog'\].*same class sub-folders"):
        modality.dataset("val")


def test_flat_folder_samples_without_the_folder(tmp_path, context):
    for i in range(2):
        write_picture(tmp_path / "flat" / f"{i}.png")
    trained = build(context, source="folder", path=str(tmp_path / "flat"), resolution=8)  # conditional: true
    trained.dataset("train")
    state = trained.state_dict()
    (tmp_path / "flat").rename(tmp_path / "moved")
    sampler = SPEC.build(ImageParams(source="folder", path=str(tmp_path / "flat"), resolution=8),
                         PluginContext(purpose="sample"))
    sampler.load_state_dict(state)
    assert sampler.class_names is None and sampler.condition() is None


def _greys(data) -> set[int]:
    return set(grey_list(data))


def test_folder_split_is_stable_as_files_are_added(tmp_path, context):
    params = {"source": "folder", "path": str(tmp_path / "pets"), "resolution": 4, "channels": 1,
              "val_fraction": 0.3}
    write_greys(tmp_path / "pets", 10)
    before = build(context, **params)
    val, train = _greys(before.dataset("val")), _greys(before.dataset("train"))
    write_greys(tmp_path / "pets", 5, start=10)
    after = build(context, **params)
    assert val <= _greys(after.dataset("val")) and train <= _greys(after.dataset("train"))
    other_seed = build(context, **params, split_seed=1)
    assert _greys(other_seed.dataset("val")) != _greys(after.dataset("val"))


def test_cached_and_on_access_folders_hold_out_the_same_files_with_corrupt_ones(tmp_path, context):
    """Both paths split the same files by their names; what a user gets differs by the corrupt files: the
    cache drops them, the on-access reader keeps each one's place and fills it with its split's next
    readable picture (a repeat; docs/plugins/image.md)."""
    write_greys(tmp_path / "pets", 10, classes=("cat",))
    for name in ("000b_bad.png", "006b_bad.png"):  # by their hashes: 000b trained on, 006b held out
        (tmp_path / "pets" / "cat" / name).write_bytes(b"not a png")
    params = {"source": "folder", "path": str(tmp_path / "pets"), "resolution": 4, "channels": 1,
              "val_fraction": 0.3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached, on_access = build(context, **params), build(context, **params, cache_mb=0)
        assert grey_list(cached.dataset("val")) == [0, 6, 10, 16]
        assert grey_list(on_access.dataset("val")) == [0, 6, 10, 16, 16]  # 006b_bad: the next val picture, 008
        assert grey_list(cached.dataset("train")) == [2, 4, 8, 12, 14, 18]
        assert grey_list(on_access.dataset("train")) == [2, 2, 4, 8, 12, 14, 18]  # 000b_bad: 001 again


def test_an_empty_held_out_split_is_a_clear_error(tmp_path, context):
    write_greys(tmp_path / "pets", 1)
    modality = build(context, source="folder", path=str(tmp_path / "pets"), resolution=4, val_fraction=0.01)
    with pytest.raises(ValueError, match="'val' split of .* is empty.*raise val_fraction"):
        modality.dataset("train")


def test_limit_keeps_the_class_mix(tmp_path, context):
    write_greys(tmp_path / "pets", 6)
    folder = build(context, source="folder", path=str(tmp_path / "pets"), resolution=4, limit=6).dataset("train")
    assert sorted(int(folder[i][1]) for i in range(len(folder))) == [0, 0, 0, 1, 1, 1]
    digits = build(context, limit=100).dataset("train")
    counts = torch.bincount(torch.stack([digits[i][1] for i in range(len(digits))]), minlength=10)
    assert len(digits) == 100 and counts.min() >= 9 and counts.max() <= 11  # each digit's share, give or take 1


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("flip", [True, False])
def test_batched_fetch_matches_item_by_item(labelled, flip):
    """The data loader's one-call batch fetch gives exactly the items __getitem__ gives, mirrored ones included,
    and a loader batch equals the stacked items."""
    from torch.utils.data import DataLoader
    from mfkit_image.data.sets import PictureSet

    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, size=(7, 5, 6, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=7) if labelled else None
    dataset = PictureSet(pictures, labels, flip=flip)
    indices = [0, len(dataset) - 1, 3, 3, 6] + ([8, 13] if flip else [])
    batched, single = dataset.__getitems__(indices), [dataset[i] for i in indices]
    assert len(batched) == len(single)
    for got, want in zip(batched, single):
        for got_part, want_part in zip(got if labelled else [got], want if labelled else [want]):
            assert got_part.dtype == want_part.dtype and torch.equal(got_part, want_part)
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    with pytest.raises(IndexError):
        dataset.__getitems__([0, len(dataset)])
    assert len(list(iter(dataset))) == len(dataset)  # iteration stops at the end
    loader = DataLoader(dataset, batch_size=len(dataset), shuffle=False)
    batch = next(iter(loader))
    items = [dataset[i] for i in range(len(dataset))]
    if labelled:
        assert torch.equal(batch[0], torch.stack([x for x, _ in items]))
        assert torch.equal(batch[1], torch.stack([y for _, y in items]))
    else:
        assert torch.equal(batch, torch.stack(items))


@pytest.mark.skipif(__import__("sys").platform == "win32", reason="st_ctime is the creation time on Windows")
def test_a_file_rewritten_with_its_size_and_mtime_kept_is_decoded_again(class_folder, context, monkeypatch):
    """The decode cache is keyed by mfkit.plugins.file_signature: a rewrite that keeps the size and the
    modification time (cp -p, rsync -t) still changes the key, so stale pictures are never reused."""
    import os
    import time

    params = {"source": "folder", "path": str(class_folder), "resolution": 8}
    with pytest.warns(UserWarning):
        build(context, **params).dataset("train")
    picture = class_folder / "cats" / "c0.png"
    stat, content = picture.stat(), picture.read_bytes()
    time.sleep(0.05)
    picture.write_bytes(content)
    os.utime(picture, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    calls = []
    original = folders.decode_all
    monkeypatch.setattr(folders, "decode_all", lambda *a, **k: calls.append(1) or original(*a, **k))
    with pytest.warns(UserWarning):
        build(context, **params).dataset("train")
    assert calls == [1]
