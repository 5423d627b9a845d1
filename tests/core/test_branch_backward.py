"""The split pass's second branch backpropagated on its own (:mod:`mfkit.core.branch_backward`).

Reference: the same split with the branch left in the loss's graph (``MFKIT_BRANCH_BACKWARD=0``), whose
gradients autograd sums as always. The branch must give the same gradients bit for bit under
``loss.backward()``, and the same gradients through its fallback under every other way of asking for them
(``torch.autograd.grad``, ``backward(inputs=...)``, ``create_graph=True``, hooks), never writing a
``.grad`` the caller did not ask for.
"""
import pytest
import torch
from torch import nn

import mfkit
from mfkit.core import branch_backward
from mfkit.core.branch_backward import _Branch, detach_branch, worthwhile
from mfkit.nn import MLPBackbone

B = 24


@pytest.fixture(autouse=True)
def small_backbones_too(monkeypatch):
    """The tests' backbones are small: let the join be used for them."""
    monkeypatch.setattr(branch_backward, "MIN_WEIGHTS", 0)


def setup(num_classes=None):
    torch.manual_seed(0)
    model = MLPBackbone(6, width=32, depth=2, num_classes=num_classes)
    for p in model.parameters():
        nn.init.normal_(p, std=0.2)
    x = torch.randn(B, 6, generator=torch.Generator().manual_seed(1))
    objective = mfkit.MeanFlow(jvp_rows="r_neq_t", r_neq_t_share=0.4)
    draw = objective.draw(x.shape, generator=torch.Generator().manual_seed(2))
    assert 0 < int((draw.r != draw.t).sum()) < B
    return model, x, objective, draw


def loss_of(model, x, objective, draw, bridged, monkeypatch):
    monkeypatch.setenv("MFKIT_BRANCH_BACKWARD", "1" if bridged else "0")
    return objective(model, x, None, draw=draw).loss


def branched(loss) -> bool:
    """Does the loss's graph contain the branch join?"""
    stack, seen = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node).__name__ == f"{_Branch.__name__}Backward":
            return True
        stack.extend(n for n, _ in node.next_functions)
    return False


def grads(model):
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def reference_grads(model, x, objective, draw, monkeypatch):
    model.zero_grad(set_to_none=True)
    loss = loss_of(model, x, objective, draw, False, monkeypatch)
    assert not branched(loss)
    loss.backward()
    result = grads(model)
    model.zero_grad(set_to_none=True)
    return result


def test_backward_gives_the_same_gradients_bit_for_bit(monkeypatch):
    model, x, objective, draw = setup()
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    assert branched(loss)
    loss.backward()
    for got, want in zip(grads(model), expected):
        assert torch.equal(got, want)


def test_gradients_accumulate_over_two_losses(monkeypatch):
    model, x, objective, draw = setup()
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    for _ in range(2):
        loss_of(model, x, objective, draw, True, monkeypatch).backward()
    for got, want in zip(grads(model), expected):
        torch.testing.assert_close(got, 2 * want, rtol=1e-6, atol=0)


def test_autograd_grad_returns_every_contribution_and_writes_no_grad(monkeypatch):
    model, x, objective, draw = setup()
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    assert branched(loss)
    got = torch.autograd.grad(loss, list(model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    for g, want in zip(got, expected):
        torch.testing.assert_close(g, want, rtol=1e-6, atol=1e-7)


def test_backward_with_inputs_writes_only_those(monkeypatch):
    model, x, objective, draw = setup()
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    params = list(model.parameters())
    chosen = params[::2]
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    loss.backward(inputs=chosen)
    for i, p in enumerate(params):
        if i % 2:
            assert p.grad is None
        else:
            torch.testing.assert_close(p.grad, expected[i], rtol=1e-6, atol=1e-7)


def test_create_graph_gives_second_order_gradients(monkeypatch):
    def second_order(bridged):
        model, x, objective, draw = setup()
        loss = loss_of(model, x, objective, draw, bridged, monkeypatch)
        assert branched(loss) == bridged
        first = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
        penalty = sum(g.square().sum() for g in first)
        return [g.detach() for g in first], torch.autograd.grad(penalty, list(model.parameters()), allow_unused=True)

    first_ref, second_ref = second_order(False)
    first, second = second_order(True)
    for got, want in zip([*first, *second], [*first_ref, *second_ref]):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_hooked_parameter_keeps_the_plain_graph(monkeypatch):
    model, x, objective, draw = setup()
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    seen = []
    first = next(model.parameters())
    handle = first.register_hook(lambda g: seen.append(g.clone()))
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    assert not branched(loss)
    loss.backward()
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], expected[0])
    first.grad = None
    first.register_post_accumulate_grad_hook(lambda p: None)
    assert not branched(loss_of(model, x, objective, draw, True, monkeypatch))


def test_inputs_with_gradient_keep_the_plain_graph(monkeypatch):
    model, x, objective, draw = setup()
    x = x.clone().requires_grad_()
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    assert not branched(loss)
    (x_grad,) = torch.autograd.grad(loss, [x])
    x_ref = x.detach().clone().requires_grad_()
    (ref,) = torch.autograd.grad(loss_of(model, x_ref, objective, draw, False, monkeypatch), [x_ref])
    torch.testing.assert_close(x_grad, ref)


def test_a_second_backward_says_what_to_do(monkeypatch):
    model, x, objective, draw = setup()
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="jvp_rows='all'"):
        loss.backward()


def test_a_subgraph_shared_by_both_branches():
    """A tensor the backbone computed once from a parameter (cached across calls) is reached by both
    branches; backpropagating branch B first must neither fail nor count its contribution twice."""
    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(4, 4))
    shared = weight.exp()  # one graph node, used by both branches

    def branch(rows):
        return (rows @ shared).tanh()

    a, b = torch.randn(5, 4), torch.randn(3, 4)
    (torch.cat([branch(a), branch(b)]).square().sum()).backward(retain_graph=True)
    expected = weight.grad.clone()
    weight.grad = None
    joined = detach_branch(branch(b), (b,))
    assert type(joined.grad_fn).__name__ == f"{_Branch.__name__}Backward"
    torch.cat([branch(a), joined]).square().sum().backward()
    torch.testing.assert_close(weight.grad, expected, rtol=1e-6, atol=0)


def test_switched_off_by_the_environment_or_without_graph(monkeypatch):
    out = torch.randn(3, requires_grad=True) * 2
    monkeypatch.delenv("MFKIT_BRANCH_BACKWARD", raising=False)
    assert type(detach_branch(out, ()).grad_fn).__name__ == f"{_Branch.__name__}Backward"
    monkeypatch.setenv("MFKIT_BRANCH_BACKWARD", "0")
    assert detach_branch(out, ()) is out
    monkeypatch.delenv("MFKIT_BRANCH_BACKWARD")
    plain = out.detach()
    assert detach_branch(plain, ()) is plain


def test_only_backbones_with_many_weights(monkeypatch):
    monkeypatch.setattr(branch_backward, "MIN_WEIGHTS", 1 << 22)
    small, large = nn.Linear(64, 64), nn.Linear(2048, 2048)
    assert not worthwhile(small) and worthwhile(large) and not worthwhile(lambda x: x)
    frozen = nn.Linear(2048, 2048).requires_grad_(False)
    assert not worthwhile(frozen)  # frozen weights get no gradient to add
    large.weight.requires_grad_(False)
    assert worthwhile(large)  # remembered per module: only the speed depends on it, never the gradients
    out = small(torch.randn(2, 64))
    assert detach_branch(out, (), small) is out
    model, x, objective, draw = setup()  # 1.4k weights
    assert not branched(loss_of(model, x, objective, draw, True, monkeypatch))


def test_a_hook_registered_after_the_forward_stops_the_backward(monkeypatch):
    """The join was chosen at the forward; a hook that appears later would see g_B alone: a clear error."""
    model, x, objective, draw = setup()
    first = next(model.parameters())
    for register in (lambda: first.register_hook(lambda g: None),
                     lambda: first.register_post_accumulate_grad_hook(lambda p: None)):
        loss = loss_of(model, x, objective, draw, True, monkeypatch)
        assert branched(loss)
        handle = register()
        with pytest.raises(RuntimeError, match="MFKIT_BRANCH_BACKWARD=0"):
            loss.backward()
        handle.remove()
        model.zero_grad(set_to_none=True)


def test_autograd_grad_with_retain_graph_then_backward(monkeypatch):
    """Adaptive loss weighting asks for some gradients first (retain_graph=True), then backpropagates."""
    model, x, objective, draw = setup()
    params = list(model.parameters())
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    assert branched(loss)
    (last,) = torch.autograd.grad(loss, [params[-2]], retain_graph=True)
    torch.testing.assert_close(last, expected[-2], rtol=1e-6, atol=1e-7)
    loss.backward()
    for got, want in zip(grads(model), expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_backward_over_two_groups_of_inputs(monkeypatch):
    model, x, objective, draw = setup()
    params = list(model.parameters())
    expected = reference_grads(model, x, objective, draw, monkeypatch)
    loss = loss_of(model, x, objective, draw, True, monkeypatch)
    loss.backward(inputs=params[:3], retain_graph=True)
    loss.backward(inputs=params[3:])
    for got, want in zip(grads(model), expected):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_never_in_a_distributed_run_however_the_model_is_wrapped(process_group, monkeypatch):
    """A Lightning-style training module wrapped in DDP calls the objective with the bare backbone: the
    join cannot see the wrapper, so a process group alone switches it off."""
    from torch.nn.parallel import DistributedDataParallel

    model, x, objective, draw = setup()

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = model

        def forward(self, x):
            return objective(self.backbone, x, None, draw=draw).loss

    monkeypatch.setenv("MFKIT_BRANCH_BACKWARD", "1")
    loss = DistributedDataParallel(Step())(x)
    assert not branched(loss)
    loss.backward()
