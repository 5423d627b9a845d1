"""mfkit-points: a point-cloud plugin for mfkit.

Registers the modality ``points``, the backbones ``point_transformer`` and ``point_set``, the evaluator
``points`` and the recipes ``points_shapes`` and ``points_meshes_gpu``.
"""
