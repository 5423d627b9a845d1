"""Recipes shipped with mfkit-points (found by `mfkit recipes` through the mfkit.recipes entry point)."""
