"""Recipes shipped with mfkit-image (copies of the checkout's recipes/image_*.yaml; a test keeps them equal)."""
