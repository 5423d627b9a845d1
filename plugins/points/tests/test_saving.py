"""Saving samples: PLY files trimesh reads back, a PNG with drawn points, previews lighter than samples."""
from __future__ import annotations

import numpy as np
import torch
import trimesh
from PIL import Image

from tests_support import build


def test_samples_are_written_as_ply_png_and_npy(tmp_path, context):
    modality = build({"num_points": 64, "corpus_train_per_class": 2, "corpus_val_per_class": 1,
                      "preview_clouds": 3}, context)
    clouds = torch.from_numpy(np.stack([modality.dataset("train")[i][0].numpy() for i in range(5)]))
    labels = torch.tensor([0, 1, 2, 3, 6])
    files = modality.save(clouds, tmp_path / "samples", labels, kind="samples")
    plys = sorted(f for f in files if f.suffix == ".ply")
    assert len(plys) == 5 and plys[4].name == "cloud-00004-vase.ply"
    unit = modality.decode(clouds)  # files hold unit-sphere clouds, not the scaled model tensors
    read = trimesh.load(plys[1])
    assert isinstance(read, trimesh.PointCloud) and np.allclose(read.vertices, unit[1], atol=1e-6)
    assert np.array_equal(np.load(tmp_path / "samples" / "clouds.npy"), unit)
    assert np.load(tmp_path / "samples" / "labels.npy").tolist() == labels.tolist()
    image = np.asarray(Image.open(tmp_path / "samples" / "clouds.png").convert("L"))
    assert (image < 150).mean() > 0.01  # points were drawn, not just a white canvas
    preview = modality.save(clouds, tmp_path / "preview", labels, kind="preview", step=10)
    assert len([f for f in preview if f.suffix == ".ply"]) == 3 and not (tmp_path / "preview" / "clouds.npy").exists()


def test_preview_draws_only_a_few_clouds(context):
    assert build({"preview_clouds": 14}, context).preview_count(512) == 14
