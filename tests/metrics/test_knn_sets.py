"""k-NN precision/recall, set metrics (MMD, COV, 1-NNA) and Chamfer distance against brute-force loops."""
import pytest
import torch

from mfkit.metrics import chamfer_distance, knn_precision_recall, set_metrics
from mfkit.metrics.knn import knn_radii


def _dist(u, v):
    return float((u - v).norm())


def _brute_precision_recall(gen, real, k):
    def radius(points, i):
        return sorted(_dist(points[i], points[j]) for j in range(len(points)) if j != i)[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    gen_r = [radius(gen, i) for i in range(len(gen))]
    precision = sum(any(_dist(g, real[i]) <= real_r[i] for i in range(len(real))) for g in gen) / len(gen)
    recall = sum(any(_dist(r, gen[j]) <= gen_r[j] for j in range(len(gen))) for r in real) / len(real)
    return precision, recall


@pytest.mark.parametrize("shift", [0.0, 0.7, 1.5])
def test_knn_precision_recall_match_brute_force_on_shifted_clouds(shift):
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 2, generator=g, dtype=torch.float64)
    gen = torch.randn(30, 2, generator=g, dtype=torch.float64) * 0.6 + shift
    assert knn_precision_recall(gen, real, k=3) == pytest.approx(_brute_precision_recall(gen, real, 3))


def test_knn_precision_recall_limits():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(200, 3, generator=g)
    assert knn_precision_recall(real.clone(), real) == (1.0, 1.0)
    assert knn_precision_recall(real + 100, real) == (0.0, 0.0)
    # a generator covering only a small blob around the origin: realistic, but low recall
    precision, recall = knn_precision_recall(0.1 * torch.randn(200, 3, generator=g), real)
    assert precision > 0.9 and recall < 0.3
    assert torch.allclose(knn_radii(torch.tensor([[0.0], [1.0], [3.0]]), k=1), torch.tensor([1.0, 1.0, 2.0]))


def _brute_set_metrics(gen, ref, distance):
    d = lambda a, b: float(distance(a[None], b[None])[0, 0])  # noqa: E731
    n, m = len(gen), len(ref)
    mmd = sum(min(d(gen[i], ref[j]) for i in range(n)) for j in range(m)) / m
    matched = {min(range(m), key=lambda j: d(gen[i], ref[j])) for i in range(n)}
    items = [(x, 0) for x in gen] + [(x, 1) for x in ref]
    correct = 0
    for a, (x, label) in enumerate(items):
        nearest = min((b for b in range(len(items)) if b != a), key=lambda b: d(x, items[b][0]))
        correct += items[nearest][1] == label
    return {"mmd": mmd, "cov": len(matched) / m, "1nna": correct / len(items)}


def _euclidean(a, b):
    return torch.cdist(a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double())


def test_set_metrics_match_brute_force_for_vectors_and_point_clouds():
    g = torch.Generator().manual_seed(2)
    gen, ref = torch.randn(12, 5, generator=g), torch.randn(15, 5, generator=g) + 0.3
    assert set_metrics(gen, ref, _euclidean, chunk=4) == pytest.approx(_brute_set_metrics(gen, ref, _euclidean))
    clouds_g, clouds_r = torch.randn(6, 10, 3, generator=g), torch.randn(7, 8, 3, generator=g) * 1.3
    assert set_metrics(clouds_g, clouds_r, chamfer_distance) == pytest.approx(
        _brute_set_metrics(clouds_g, clouds_r, chamfer_distance))


def test_set_metrics_limits():
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(20, 4, generator=g)
    copied = set_metrics(ref.clone(), ref, _euclidean)  # memorised copies: perfect MMD/COV, 1-NNA 0
    assert copied == {"mmd": 0.0, "cov": 1.0, "1nna": 0.0}
    far = set_metrics(ref + 50, ref, _euclidean)        # separable: 1-NNA 1
    assert far["1nna"] == 1.0 and far["mmd"] > 40


def test_chamfer_distance_matches_brute_force_and_a_closed_form():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(3, 5, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    expected = torch.empty(3, 4, dtype=torch.float64)
    for i in range(3):
        for j in range(4):
            d2 = [[float((a[i, p].double() - b[j, q].double()).pow(2).sum()) for q in range(6)] for p in range(5)]
            expected[i, j] = sum(min(row) for row in d2) / 5 + sum(min(col) for col in zip(*d2)) / 6
    assert torch.allclose(chamfer_distance(a, b), expected, rtol=1e-6)
    assert torch.allclose(chamfer_distance(a, b, budget=1), expected, rtol=1e-6)  # one pair at a time
    # single-point clouds: CD = 2 |x - y|^2
    x, y = torch.tensor([[[0.0, 0.0, 0.0]]]), torch.tensor([[[1.0, 2.0, 2.0]]])
    assert float(chamfer_distance(x, y)) == pytest.approx(18.0)
    with pytest.raises(ValueError):
        chamfer_distance(a[0], b)
