"""Minibatch optimal-transport couplings: exact against brute force, class by class, inside the objective."""
import itertools
from dataclasses import replace

import pytest
import torch

import mfkit
from mfkit.core.coupling import (
    CouplingError, align_sets, blocks, condition_groups, couple, ot_permutation, set_ot_order,
)
from mfkit.data.toy2d import toy_sample
from mfkit.nn import MLPBackbone

SHAPES = [(2,), (3, 2), (1, 2, 2)]


def brute_force_cost(x, noise):
    """The least total squared distance over every pairing (small batches only)."""
    flat_x, flat_e = x.reshape(len(x), -1), noise.reshape(len(noise), -1)
    return min(sum(float((flat_x[i] - flat_e[p[i]]).pow(2).sum()) for i in range(len(x)))
               for p in itertools.permutations(range(len(x))))


def total_cost(x, noise):
    return float((x - noise).pow(2).sum())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"rank{len(s)}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ot_pairing_is_the_exact_optimum(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x, noise = torch.randn(6, *shape, generator=g, dtype=torch.float64), torch.randn(6, *shape, generator=g,
                                                                                      dtype=torch.float64)
    permutation = ot_permutation(x, noise)
    assert sorted(permutation.tolist()) == list(range(6))
    assert total_cost(x, noise[permutation]) == pytest.approx(brute_force_cost(x, noise), rel=1e-12)


def test_ot_pairing_stays_within_classes_and_is_optimal_in_each():
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 1, 0])
    x, noise = torch.randn(8, 2, generator=g, dtype=torch.float64), torch.randn(8, 2, generator=g, dtype=torch.float64)
    permutation = ot_permutation(x, noise, labels)
    assert torch.equal(labels[permutation], labels)  # each row's noise comes from its own class's draws
    for label in labels.unique():
        rows = (labels == label).nonzero().flatten()
        assert total_cost(x[rows], noise[permutation[rows]]) == pytest.approx(
            brute_force_cost(x[rows], noise[rows]), rel=1e-12)


def test_blocks_are_exact_within_each_and_never_cross():
    g = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 1] * 7)  # 7 rows per class: blocks of 3 give runs of 3, 2, 2
    x, noise = torch.randn(14, 2, generator=g, dtype=torch.float64), torch.randn(14, 2, generator=g,
                                                                                  dtype=torch.float64)
    assert [b.tolist() for b in blocks(torch.arange(7), 3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [b.tolist() for b in blocks(torch.arange(7), None)] == [list(range(7))]
    permutation = ot_permutation(x, noise, labels, block=3)
    for label in (0, 1):
        for run in blocks((labels == label).nonzero().flatten(), 3):
            assert sorted(permutation[run].tolist()) == sorted(run.tolist())  # noise stays in its block
            assert total_cost(x[run], noise[permutation[run]]) == pytest.approx(
                brute_force_cost(x[run], noise[run]), rel=1e-12)
    # a block as large as the batch is the whole-batch assignment; a block below 2 is refused
    assert torch.equal(ot_permutation(x, noise, block=14), ot_permutation(x, noise))
    with pytest.raises(ValueError, match="at least 2"):
        ot_permutation(x, noise, block=1)
    with pytest.raises(ValueError, match="coupling_block"):
        mfkit.MeanFlow(coupling="ot", coupling_block=1)


def test_condition_groups_reads_every_part_of_a_structure():
    labels = torch.tensor([0, 0, 1, 1])
    tokens = torch.tensor([[5, 6], [5, 7], [5, 6], [5, 6]])
    groups = condition_groups({"label": labels, "tokens": tokens, "scale": torch.tensor(2.0)}, 4)
    assert groups[2] == groups[3] and len(set(groups.tolist())) == 3
    assert condition_groups(None, 4).tolist() == [0, 0, 0, 0]
    assert condition_groups([labels], 4).tolist() == condition_groups(labels, 4).tolist()


def test_continuous_conditions_are_refused_with_a_reason():
    x = torch.randn(5, 2)
    with pytest.raises(CouplingError, match="condition of its own"):
        ot_permutation(x, torch.randn(5, 2), torch.randn(5, 3))


def test_labels_that_all_differ_keep_their_noise():
    """A small batch of many classes (1,000 ImageNet classes, 32 rows) may hold no two equal labels: valid,
    nothing to pair in it (the recipe check runs such a batch)."""
    x = torch.randn(4, 2)
    assert ot_permutation(x, torch.randn(4, 2), torch.tensor([3, 1, 0, 2])).tolist() == [0, 1, 2, 3]


def test_independent_coupling_leaves_the_noise_as_drawn():
    noise = torch.randn(4, 2)
    assert couple("independent", torch.randn(4, 2), noise) is noise
    with pytest.raises(ValueError, match="unknown coupling"):
        couple("sinkhorn", torch.randn(4, 2), noise)


def test_ot_shortens_the_paths_of_a_large_batch():
    g = torch.Generator().manual_seed(0)
    x, noise = toy_sample("checkerboard", 512, g), torch.randn(512, 2, generator=g)
    assert total_cost(x, couple("ot", x, noise)) < 0.5 * total_cost(x, noise)


@pytest.mark.parametrize("objective", [mfkit.MeanFlow(coupling="ot", r_neq_t_share=0.5),
                                       mfkit.FlowMatching(coupling="ot")], ids=["meanflow", "flow_matching"])
def test_objective_with_ot_is_the_objective_on_re_paired_noise(objective):
    torch.manual_seed(0)
    model = MLPBackbone(2, width=32, depth=2, num_classes=3)
    x, labels = torch.randn(32, 2), torch.randint(0, 3, (32,))
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(1))
    repaired = mfkit.Draw(draw.noise[ot_permutation(x, draw.noise, labels)], draw.t, draw.r, draw.dropped)
    coupled = objective(model, x, labels, draw=draw)
    expected = replace(objective, coupling="independent")(model, x, labels, draw=repaired)
    torch.testing.assert_close(coupled.loss, expected.loss)
    independent = replace(objective, coupling="independent")(model, x, labels, draw=draw)
    assert not torch.allclose(coupled.loss, independent.loss)


# -- set coupling: each sample's elements reordered to meet the noise elements ---------------------------

SET_SHAPES = [((5,), 0), ((5, 3), 0), ((2, 5), 1), ((5, 2, 2), 0)]


def brute_force_set_cost(x, noise, axis):
    """The least sum_j ||x_q(j) - e_j||^2 over every reordering q of one sample's elements."""
    xs, es = x.movedim(axis, 0), noise.movedim(axis, 0)
    return min(float((xs[list(q)] - es).pow(2).sum()) for q in itertools.permutations(range(xs.shape[0])))


def same_elements(a, b, axis):
    """Every feature's values along the set axis agree as multisets (a reordering leaves them)."""
    return torch.equal(a.movedim(axis + 1, -1).sort(-1).values, b.movedim(axis + 1, -1).sort(-1).values)


@pytest.mark.parametrize("shape,axis", SET_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("seed", [0, 1])
def test_set_coupling_is_the_exact_optimum_in_every_sample(shape, axis, seed):
    g = torch.Generator().manual_seed(seed)
    x, noise = (torch.randn(3, *shape, generator=g, dtype=torch.float64) for _ in range(2))
    aligned = align_sets("ot", x, noise, axis)
    assert aligned.shape == x.shape and same_elements(aligned, x, axis)
    for b in range(3):
        assert total_cost(aligned[b], noise[b]) == pytest.approx(brute_force_set_cost(x[b], noise[b], axis), rel=1e-12)
        order = set_ot_order(x, noise, axis)[b]
        torch.testing.assert_close(aligned[b], x[b].index_select(axis, order), rtol=0, atol=0)


def test_set_coupling_shortens_the_paths_of_point_clouds():
    g = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(4, 256, 3, generator=g), dim=-1)  # points on spheres
    noise = torch.randn(4, 256, 3, generator=g)
    aligned = align_sets("ot", direction, noise, 0)
    assert total_cost(aligned, noise) < 0.5 * total_cost(direction, noise)
    assert align_sets("independent", direction, noise, 0) is direction
    empty = torch.zeros(0, 256, 3)
    assert align_sets("ot", empty, empty, 0).shape == (0, 256, 3)


def test_set_coupling_needs_a_set_axis_and_a_known_kind():
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="set axis"):
        align_sets("ot", x, torch.randn_like(x), None)
    with pytest.raises(ValueError, match="not an axis"):
        set_ot_order(x, torch.randn_like(x), 2)
    with pytest.raises(ValueError, match="unknown set coupling"):
        align_sets("sinkhorn", x, torch.randn_like(x), 0)
    with pytest.raises(ValueError, match="set_axis"):
        mfkit.MeanFlow(set_coupling="ot")
    with pytest.raises(ValueError, match="must be an int"):
        mfkit.MeanFlow(set_coupling="ot", set_axis=True)
    with pytest.raises(ValueError, match="unknown set_coupling"):
        mfkit.FlowMatching(set_coupling="sorted", set_axis=0)


class PointwiseNet(torch.nn.Module):
    """u(z, r, t) acting on each point alike (permutation-equivariant), with a class embedding."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.SiLU(), torch.nn.Linear(16, 3))
        self.label = torch.nn.Embedding(3, 3)

    def forward(self, z, r, t, cond=None):
        times = torch.stack([r, t], -1)[:, None, :].expand(-1, z.shape[1], -1)
        return self.mix(torch.cat([z, times], -1)) + self.label(cond)[:, None, :]


@pytest.mark.parametrize("objective", [mfkit.MeanFlow(set_coupling="ot", set_axis=0, r_neq_t_share=0.5),
                                       mfkit.FlowMatching(set_coupling="ot", set_axis=0),
                                       mfkit.MeanFlow(coupling="ot", set_coupling="ot", set_axis=0)],
                         ids=["meanflow", "flow_matching", "after_batch_ot"])
def test_objective_with_set_coupling_is_the_objective_on_reordered_data(objective):
    torch.manual_seed(0)
    model = PointwiseNet()
    x, labels = torch.randn(8, 6, 3), torch.randint(0, 3, (8,))
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(1))
    plain = replace(objective, set_coupling="independent", set_axis=None)
    noise = couple(objective.coupling, x, draw.noise, labels)  # batch pairs first, then elements
    aligned = align_sets("ot", x, noise, 0)
    coupled = objective(model, x, labels, draw=draw)
    expected = replace(plain, coupling="independent")(model, aligned, labels,
                                                      draw=mfkit.Draw(noise, draw.t, draw.r, draw.dropped))
    torch.testing.assert_close(coupled.loss, expected.loss)
    assert not torch.allclose(coupled.loss, plain(model, x, labels, draw=draw).loss)
