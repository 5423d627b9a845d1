"""Test helpers for mfkit users and plugin authors: analytic oracles and contract checks."""
from mfkit.testing.gaussian import GaussianOracle

__all__ = ["GaussianOracle"]
