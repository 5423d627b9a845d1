"""Recipes shipped with the example plugin (entry-point group ``mfkit.recipes``): ``mfkit train sines``."""
