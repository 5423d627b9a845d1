"""Backbones over point sets (B, N, 3): a transformer and a cheaper PointNet-style set network."""
