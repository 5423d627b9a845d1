"""Example mfkit plugin: sine-wave signals (modality ``sines``) and a 1-D conv net (backbone ``conv1d``)."""
