"""Mesh and point-cloud folders: layouts, formats, splits, broken files, caching, clear errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import trimesh

from mfkit_points import folders
from mfkit_points.folders import FolderError, load_folder, scan
from mfkit_points.modality import SPEC, Points, PointsParams
from mfkit_points.reading import file_seed, read_cloud
from tests_support import build

from conftest import write_mesh_folder


def test_modelnet_layout_gives_classes_and_splits(mesh_folder, private_cache):
    with pytest.warns(UserWarning) as caught:
        arrays, names = load_folder(mesh_folder, private_cache, 64, seed=0)
    assert names == ["ball", "cube"]
    labels, split = arrays["labels"].tolist(), arrays["split"].tolist()
    # ball: a.ply b.stl d.xyz e.npy f.ply in train, c.off in test; cube: a.off b.obj c.glb train, d.stl test
    assert sorted(zip(labels, split)) == sorted([(0, 0)] * 5 + [(0, 1)] + [(1, 0)] * 3 + [(1, 1)])
    assert arrays["points"].shape == (10, 64, 3)
    radii = np.linalg.norm(arrays["points"], axis=2).max(axis=1)
    assert np.allclose(radii, 1.0, atol=1e-5) and np.allclose(arrays["points"].mean(axis=1), 0, atol=1e-5)
    message = str(caught[0].message)
    assert "skipped 2 broken file(s) of 12" in message
    assert "cube/train/broken.off" in message and "ball/train/empty.obj" in message


def test_clouds_are_sampled_once_and_cached(mesh_folder, private_cache, monkeypatch):
    with pytest.warns(UserWarning):
        first, _ = load_folder(mesh_folder, private_cache, 64, seed=0)

    def fail(*args):
        raise AssertionError("a cached folder was read again")

    monkeypatch.setattr(folders, "_read_one", fail)
    with pytest.warns(UserWarning, match="skipped 2 broken"):  # the cache remembers the broken files
        again, _ = load_folder(mesh_folder, private_cache, 64, seed=0)
    assert np.array_equal(first["points"], again["points"])
    monkeypatch.undo()
    (mesh_folder / "cube/train/broken.off").unlink()  # a changed folder is a new cache entry
    with pytest.warns(UserWarning, match="skipped 1 broken file"):  # empty.obj is still broken
        changed, _ = load_folder(mesh_folder, private_cache, 64, seed=0)
    assert np.array_equal(changed["points"], first["points"])
    assert len(list((private_cache / "points").glob("folder-*.npz"))) == 2


def test_sampling_is_deterministic_and_follows_the_seed(tmp_path):
    root = write_mesh_folder(tmp_path / "m", broken=False)
    a, _ = load_folder(root, tmp_path / "c1", 64, seed=0)
    b, _ = load_folder(root, tmp_path / "c2", 64, seed=0)
    c, _ = load_folder(root, tmp_path / "c3", 64, seed=1)
    assert np.array_equal(a["points"], b["points"]) and not np.array_equal(a["points"], c["points"])


def test_shapenet_layout_and_hash_split(tmp_path):
    root = tmp_path / "shapenet"
    for synset, mesh in (("02691156", trimesh.creation.box()), ("03001627", trimesh.creation.cone(0.5, 1.0))):
        for model in range(10):
            path = root / synset / f"model{model:02d}" / "models" / "model_normalized.obj"
            path.parent.mkdir(parents=True)
            mesh.export(path)
    entries, names = scan(root, val_fraction=0.3)
    assert names == ["02691156", "03001627"]
    assert 0 < sum(e.split for e in entries) < len(entries)
    assert scan(root, val_fraction=0.3)[0] == entries  # the split is a function of the path alone


def test_flat_folder_is_unconditional(tmp_path, context):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4):
        trimesh.creation.box(extents=(1, 1, 0.2 + 0.2 * i)).export(root / f"box{i}.stl")
    modality = build({"folder": str(root), "num_points": 32, "val_fraction": 0.5}, context)
    assert modality.condition() is None
    item = modality.dataset("train")[0]
    assert item.shape == (32, 3)


def test_class_selection_and_per_class_limit(mesh_folder, private_cache):
    arrays, names = load_folder(mesh_folder, private_cache, 32, seed=0, classes=["cube"], per_class=2)
    assert names == ["cube"] and sorted(arrays["split"].tolist()) == [0, 0, 1]  # a.off, b.obj; d.stl
    with pytest.raises(FolderError, match="chair"):
        scan(mesh_folder, 0.1, classes=["chair"])


def test_missing_and_empty_folders_are_clear_errors(tmp_path, context):
    with pytest.raises(FolderError, match="does not exist"):
        build({"folder": str(tmp_path / "nowhere")}, context).dataset("train")
    (tmp_path / "empty" / "chairs").mkdir(parents=True)
    (tmp_path / "empty" / "chairs" / "notes.txt").write_text("no meshes here")
    with pytest.raises(FolderError, match="holds no mesh or point-cloud files"):
        build({"folder": str(tmp_path / "empty")}, context).dataset("train")


def test_a_folder_of_only_broken_files_is_a_clear_error(tmp_path, context):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.off").write_text("nonsense")
    with pytest.warns(UserWarning), pytest.raises(FolderError, match="none of the 1 files"):
        build({"folder": str(tmp_path / "bad")}, context).dataset("train")


def test_sampling_needs_no_folder_once_the_class_names_travel(mesh_folder, context, tmp_path):
    with pytest.warns(UserWarning):
        trained = build({"folder": str(mesh_folder), "num_points": 32}, context)
        trained.fit(trained.dataset("train"))
    state = trained.state_dict()
    sampler = SPEC.build(PointsParams(folder=str(tmp_path / "moved-away"), num_points=32), context)
    sampler.load_state_dict(state)
    assert sampler.class_names == ["ball", "cube"] and sampler.label_of("cube") == 1


def test_encode_reads_files_meshes_and_arrays(mesh_folder, context):
    modality: Points = build({"folder": str(mesh_folder), "num_points": 50}, context)
    with pytest.warns(UserWarning, match="skipped 2 broken"):
        modality.fit(modality.dataset("train"))
    from_file = modality.encode(mesh_folder / "cube" / "train" / "a.off")
    from_mesh = modality.encode(trimesh.creation.box(extents=(1.0, 0.6, 0.3)))
    from_array = modality.encode(np.random.default_rng(0).normal(size=(500, 3)))
    for cloud in (from_file, from_mesh, from_array):
        assert cloud.shape == (50, 3)
        assert abs(cloud.norm(dim=1).max().item() - modality.scale) < 1e-4  # unit sphere x the fitted scale
        unit = modality.decode(cloud[None])[0]
        assert abs(np.linalg.norm(unit, axis=1).max() - 1.0) < 1e-5


def test_standardized_tensors_have_unit_spread_and_decode_to_the_unit_sphere(context):
    modality = build({"num_points": 64, "corpus_train_per_class": 8, "corpus_val_per_class": 2}, context)
    x = torch.stack([modality.dataset("train")[i][0] for i in range(56)])
    assert abs(x.std().item() - 1.0) < 0.02 and 2.0 < modality.scale < 3.0
    assert np.allclose(np.linalg.norm(modality.decode(x), axis=2).max(axis=1), 1.0, atol=1e-5)
    plain = build({"num_points": 64, "corpus_train_per_class": 8, "corpus_val_per_class": 2, "standardize": False},
                  context)
    assert plain.scale == 1.0 and plain.state_dict()["scale"].item() == 1.0


def test_hidden_and_macos_leftover_folders_are_not_classes(tmp_path):
    root = write_mesh_folder(tmp_path / "m", broken=False)
    for junk in (".ipynb_checkpoints/x-checkpoint.off", "__MACOSX/cube/train/._a.off", "cube/train/._b.off",
                 ".cache/ball/train/a.off"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
    entries, names = scan(root, val_fraction=0.1)
    assert names == ["ball", "cube"]
    assert not any(part.startswith((".", "__")) for e in entries for part in e.name.split("/"))


def test_encode_of_a_folder_file_is_the_cloud_training_sampled(tmp_path, context):
    root = write_mesh_folder(tmp_path / "m", broken=False)
    modality: Points = build({"folder": str(root), "num_points": 40, "seed": 3}, context)
    train = modality.dataset("train").points.numpy()
    inside = (modality.encode(root / "cube" / "train" / "b.obj") / modality.scale).numpy()
    assert sum(np.allclose(inside, cloud, atol=1e-6) for cloud in train) == 1
    outside = tmp_path / "elsewhere" / "b.obj"  # outside the folder: seeded by the file name alone
    outside.parent.mkdir()
    outside.write_bytes((root / "cube" / "train" / "b.obj").read_bytes())
    expected = read_cloud(outside, 40, file_seed(3, "b.obj"))
    assert np.allclose((modality.encode(str(outside)) / modality.scale).numpy(), expected, atol=1e-6)


def test_encode_of_a_symlinked_folder_file_or_a_file_through_a_symlinked_folder_is_the_training_cloud(tmp_path,
                                                                                                       context):
    """A link inside the folder to a file elsewhere is sampled (in training and by encode) under its name in
    the folder, not its target's; a folder given through a link works the same from either path."""
    root = write_mesh_folder(tmp_path / "m", broken=False)
    target = tmp_path / "store" / "shape.obj"
    target.parent.mkdir()
    (root / "cube" / "train" / "b.obj").rename(target)
    (root / "cube" / "train" / "b.obj").symlink_to(target)
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    modality: Points = build({"folder": str(tmp_path / "link"), "num_points": 40, "seed": 3}, context)
    train = modality.dataset("train").points.numpy()
    for path in (root / "cube" / "train" / "b.obj", tmp_path / "link" / "cube" / "train" / "b.obj"):
        assert modality.sampling_key(path) == "cube/train/b.obj"
        cloud = (modality.encode(path) / modality.scale).numpy()
        assert sum(np.allclose(cloud, sample, atol=1e-6) for sample in train) == 1
    assert modality.sampling_key(target) == "shape.obj"  # the target itself lies outside the folder


def test_a_class_without_held_out_files_is_named_in_one_warning(tmp_path):
    root = write_mesh_folder(tmp_path / "m", broken=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every class has a test/ file: no warning
        load_folder(root, tmp_path / "c1", 32, seed=0)
    (root / "cube" / "test" / "d.stl").unlink()
    with pytest.warns(UserWarning, match=r"class\(es\) cube in .* have no held-out file.*val_fraction") as caught:
        arrays, _ = load_folder(root, tmp_path / "c2", 32, seed=0)
    assert len(caught) == 1 and "ball" not in str(caught[0].message)
    assert sorted(zip(arrays["labels"].tolist(), arrays["split"].tolist())) == [(0, 0)] * 5 + [(0, 1)] + [(1, 0)] * 3
