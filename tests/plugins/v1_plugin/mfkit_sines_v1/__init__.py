"""A plugin written for plugin API v1 (mfkit 0.1's example plugin, frozen): it must keep working."""
