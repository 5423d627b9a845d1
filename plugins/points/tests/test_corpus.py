"""The embedded shapes corpus: seeded, balanced, held-out split, normalised, families told apart."""
from __future__ import annotations

import numpy as np
import pytest

from mfkit_points.corpus import load_corpus
from mfkit_points.shapes import FAMILIES, make_shape


def test_corpus_is_balanced_split_and_normalised(private_cache):
    arrays = load_corpus(private_cache, 96, 3, 2, "upright", seed=0)
    assert arrays["points"].shape == (7 * 5, 96, 3) and arrays["points"].dtype == np.float32
    for label in range(7):
        chosen = arrays["labels"] == label
        assert (arrays["split"][chosen] == 0).sum() == 3 and (arrays["split"][chosen] == 1).sum() == 2
    assert np.allclose(np.linalg.norm(arrays["points"], axis=2).max(axis=1), 1.0, atol=1e-5)


def test_corpus_is_deterministic_cached_and_seeded(tmp_path):
    first = load_corpus(tmp_path / "a", 32, 2, 1, "upright", seed=0)
    assert list((tmp_path / "a" / "points").glob("shapes-*.npz"))
    again = load_corpus(tmp_path / "b", 32, 2, 1, "upright", seed=0)
    other = load_corpus(tmp_path / "c", 32, 2, 1, "upright", seed=1)
    assert np.array_equal(first["points"], again["points"])
    assert not np.array_equal(first["points"], other["points"])


def test_a_shape_depends_on_its_own_seed_only(private_cache):
    """Shape i of a family is the same whatever the corpus size (held-out shapes never move)."""
    small = load_corpus(private_cache, 32, 2, 1, "none", seed=0)
    large = load_corpus(private_cache, 32, 4, 1, "none", seed=0)
    assert np.array_equal(small["points"][:14], large["points"][:14])
    assert small["labels"][:8].tolist() == [0, 1, 2, 3, 4, 5, 6, 0]  # interleaved families


@pytest.mark.parametrize("family", FAMILIES)
def test_families_have_their_signature(family):
    """Cheap geometric signatures: a torus has a hole at its centre; the others are filled around it
    or closed; a vase is open at the top; capsules are elongated."""
    cloud = make_shape(family, (0, 1, 2), 2048, "none")
    radial = np.linalg.norm(cloud[:, :2], axis=1)
    extent = np.ptp(cloud, axis=0)
    if family == "torus":
        assert radial.min() > 0.2 and extent[2] < extent[0] / 2
    if family == "capsule":
        assert extent[2] > 1.4 * extent[0]
    if family == "vase":
        top = cloud[:, 2] > cloud[:, 2].max() - 0.05
        assert radial[top].min() > 0.1  # no lid: nothing near the axis at the rim


def test_any_rotation_turns_the_axis(private_cache):
    upright = make_shape("capsule", (0, 4, 0, 0), 512, "none")
    turned = make_shape("capsule", (0, 4, 0, 0), 512, "any")
    assert np.ptp(upright, axis=0).argmax() == 2
    assert not np.allclose(upright, turned)
