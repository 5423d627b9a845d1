r"""Backward of a second gradient branch on its own, so shared weights are not summed out of place.

The split JVP pass (:func:`mfkit.core.jvp.jvp_on_rows`) evaluates the backbone twice with gradient: a
plain forward of the r = t rows (branch A) and a dual pass of the r != t rows (branch B). Every weight W
then receives two gradient contributions, g_A and g_B, and PyTorch's autograd engine adds them into a
fresh tensor before accumulating W.grad: one out-of-place add (allocate, read twice, write once) per
weight and step. On a 4 x 1024 MLP that is about 6% of a flow-matching step.

:func:`detach_branch` returns branch B's output cut from its graph and joined to the loss through
:class:`_Branch`. When the loss's backward reaches the join, branch B's graph is backpropagated on its
own (a nested ``torch.autograd.backward``), which writes g_B into W.grad; branch A's backward then adds
g_A into W.grad in place. The gradients are the same sum: bit for bit when ``.grad`` starts empty (two
contributions; float addition is commutative); with more contributions (gradients accumulated over
micro-batches, a weight tied elsewhere) the order of the additions changes and results can differ by
float rounding (measured up to 1.3e-7 relative); under bf16 autocast with ``jvp_precision="autocast"``
the join adds in float32 where the plain graph added in bf16 at the weight's cast (about one bf16 unit).

That is only valid when the running backward is going to write ``.grad`` of every leaf of branch B and
nothing watches the contributions one by one. :meth:`_Branch.backward` checks, and otherwise computes
g_B with ``torch.autograd.grad`` and returns it through the join's edges to the leaves, so the engine
sums it as in the plain graph (same values, only slower), keeping branch B's graph for later calls:

* ``torch.autograd.grad(loss, ...)`` (no ``.grad`` written) and ``backward(inputs=...)`` leaving out a
  leaf of branch B (the engine is asked which accumulators it will run);
* ``create_graph=True`` (grad mode is on in the backward).

A tensor hook or post-accumulate-grad hook registered on a leaf after the forward (and so not seen when
the join was chosen) raises a RuntimeError at the join: computing g_B apart would show it to the hook.

Not used at all (the caller keeps the plain graph) for a backbone of fewer than :data:`MIN_WEIGHTS`
weights (the add saved is then smaller than the bookkeeping); in a distributed run (a torch.distributed
process group is up: DDP, FSDP and the like hook gradient accumulators and must see g_A + g_B at once,
however the model is wrapped); when branch B's inputs carry gradient (their graph would be shared with
branch A); when a leaf of branch B has a tensor hook or a post-accumulate-grad hook at the forward, or is
a tensor subclass (sharded parameters); when the output has no graph; or when the environment sets
``MFKIT_BRANCH_BACKWARD=0``. Not seen: hooks registered directly on a leaf's AccumulateGrad node
(``p.view_as(p).grad_fn.next_functions[0][0].register_hook``) in a single-process run; they would fire
once per contribution: set ``MFKIT_BRANCH_BACKWARD=0`` (or ``jvp_rows: all``) for such code.

After a ``loss.backward()`` that used the join, branch B's graph is released: backpropagating the same
loss again (``retain_graph=True``) raises a RuntimeError that says so (set ``jvp_rows: all`` for that).
"""
from __future__ import annotations

import os
import weakref
from typing import Any

import torch


def _leaves(output: torch.Tensor) -> tuple[list[torch.Tensor], list[Any]]:
    """The leaf tensors (and their AccumulateGrad nodes) that ``output``'s graph reaches."""
    leaves: list[torch.Tensor] = []
    accumulators: list[Any] = []
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if isinstance(variable, torch.Tensor):  # AccumulateGrad
            leaves.append(variable)
            accumulators.append(node)
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves, accumulators


_PLAIN = (torch.Tensor, torch.nn.Parameter)

#: Fewest trainable weights for which the split pass uses the join: the add it saves costs about 0.4 ms
#: per million weights on a CPU core, walking branch B's graph about 4 us per node. On the shipped CPU
#: backbones (0.2M to 1.9M weights) it measured no gain; on the 4 x 1024 MLP (6.8M) 4 to 5% of a step.
MIN_WEIGHTS = 1 << 22


def _hooked(leaf: torch.Tensor) -> bool:
    return bool(getattr(leaf, "_backward_hooks", None)) or bool(getattr(leaf, "_post_accumulate_grad_hooks", None))


def _distributed() -> bool:
    """Is a torch.distributed process group up? Data-parallel wrappers (DDP inside a Lightning-style module,
    DDP under torch.compile, FSDP, DeepSpeed) hook gradient accumulators in ways a backbone argument does
    not show, and must see g_A + g_B at once: the join is never used in a distributed run."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _inputs_carry_gradient(inputs: Any) -> bool:
    if isinstance(inputs, torch.Tensor):
        return inputs.requires_grad
    if isinstance(inputs, dict):
        return any(_inputs_carry_gradient(value) for value in inputs.values())
    if isinstance(inputs, (list, tuple)):
        return any(_inputs_carry_gradient(value) for value in inputs)
    return False


class _Branch(torch.autograd.Function):
    """Identity on branch B's detached output; its backward runs branch B's graph (module docstring)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, *leaves: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return value.view_as(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        state = ctx.branch
        output = state.get("output")
        if output is None:
            raise RuntimeError(
                "mfkit's split JVP pass (jvp_rows 'auto' or 'r_neq_t') releases the graph of its r != t rows "
                "after the first backward, so this loss cannot be backpropagated twice; set jvp_rows='all' "
                "(recipes: objective.jvp_rows: all) to backpropagate one loss more than once")
        leaves = state["leaves"]
        if any(_hooked(leaf) for leaf in leaves):
            raise RuntimeError(
                "a gradient hook was registered on a weight between the forward pass and backward(); mfkit's "
                "split JVP pass (mfkit.core.branch_backward) decided at the forward to backpropagate the r != t "
                "rows apart, so the hook would see their gradient and the others' separately. Register hooks "
                "before the forward pass, or set the environment variable MFKIT_BRANCH_BACKWARD=0")
        if torch.is_grad_enabled() or not _all_accumulated(state["accumulators"]):
            # create_graph=True (a higher-order backward may come back through here), torch.autograd.grad
            # or backward(inputs=...) without every leaf: g_B goes back through the join's edges, summed by
            # the engine as in the plain graph. The graph is kept: a later call (the caller's
            # retain_graph=True) may need it again.
            return (None, *torch.autograd.grad(output, leaves, grad, retain_graph=True, allow_unused=True,
                                               create_graph=torch.is_grad_enabled()))
        del state["output"]  # branch B's buffers go when this returns
        # retain_graph: a subgraph shared with branch A (a tensor the backbone cached) is still needed by
        # the outer backward
        torch.autograd.backward(output, grad, retain_graph=True)
        return (None,) * (1 + len(leaves))


def _all_accumulated(accumulators: list[Any]) -> bool:
    """True when the running backward will write .grad through every one of these accumulators."""
    will_execute = getattr(torch._C, "_will_engine_execute_node", None)
    if will_execute is None:
        return False
    try:
        return all(will_execute(node) for node in accumulators)
    except RuntimeError:  # torch.autograd.grad(): no .grad is written
        return False


def worthwhile(module: Any) -> bool:
    """Does ``module`` have at least :data:`MIN_WEIGHTS` trainable weights (only an ``nn.Module`` can say)?

    The count is remembered per module: the answer only decides whether the join is used, and the join and the plain
    graph give the same gradients, so a stale answer (weights frozen or added later) costs speed, never
    exactness; counting on every step cost up to 0.3 ms on a 100-module backbone."""
    if not isinstance(module, torch.nn.Module):
        return False
    try:
        count = _WEIGHTS.get(module)
    except TypeError:  # not weak-referenceable: count every time
        return _count(module) >= MIN_WEIGHTS
    if count is None:
        _WEIGHTS[module] = count = _count(module)
    return count >= MIN_WEIGHTS


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


_WEIGHTS: "weakref.WeakKeyDictionary[torch.nn.Module, int]" = weakref.WeakKeyDictionary()


def detach_branch(output: torch.Tensor, inputs: Any, module: Any = None) -> torch.Tensor:
    """``output`` (branch B of a split pass, computed by ``module`` from ``inputs``), joined to the loss so
    that its backward runs apart (module docstring); ``output`` itself when that cannot be done safely or
    does not pay (``module`` given and not :func:`worthwhile`)."""
    if output.grad_fn is None or os.environ.get("MFKIT_BRANCH_BACKWARD", "1") == "0" or _distributed() \
            or _inputs_carry_gradient(inputs) or (module is not None and not worthwhile(module)):
        return output
    leaves, accumulators = _leaves(output)
    if not leaves or any(_hooked(leaf) or type(leaf) not in _PLAIN for leaf in leaves):
        return output
    joined = _Branch.apply(output.detach(), *leaves)
    joined.grad_fn.branch = {"output": output, "leaves": leaves, "accumulators": accumulators}
    return joined
