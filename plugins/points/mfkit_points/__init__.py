"""mfkit-points: a point-cloud plugin for mfkit (modality ``points``, backbones ``point_transformer`` and ``point_set``)."""
