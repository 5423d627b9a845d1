"""Test helpers for mfkit users and plugin authors: analytic oracles and plugin contract checks."""
from mfkit.testing.contracts import (
    ContractError,
    awake_copy,
    check_backbone,
    check_backbone_spec,
    check_jvp,
    check_modality,
    check_modality_spec,
)
from mfkit.testing.gaussian import GaussianOracle


def __getattr__(name: str):
    """The evaluator contract checks live with the evaluation runner; imported on first use."""
    if name in ("check_evaluator", "check_evaluator_spec"):
        import mfkit.evaluation as evaluation

        return getattr(evaluation, name)
    raise AttributeError(f"module 'mfkit.testing' has no attribute {name!r}")

__all__ = [
    "ContractError", "GaussianOracle", "awake_copy", "check_backbone", "check_evaluator", "check_evaluator_spec", "check_backbone_spec", "check_jvp", "check_modality",
    "check_modality_spec",
]
