"""Test helpers for mfkit users and plugin authors: analytic oracles and plugin contract checks."""
from mfkit.testing.contracts import (
    ContractError,
    check_backbone,
    check_backbone_spec,
    check_jvp,
    check_modality,
    check_modality_spec,
)
from mfkit.testing.gaussian import GaussianOracle

__all__ = [
    "ContractError", "GaussianOracle", "check_backbone", "check_backbone_spec", "check_jvp", "check_modality",
    "check_modality_spec",
]
