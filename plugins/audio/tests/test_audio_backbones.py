"""Both backbones against mfkit's contract checks (JVP included), with class, vector and no conditions."""
from __future__ import annotations

import pytest

from mfkit.plugins import ClassCondition, DataInfo, VectorCondition
from mfkit.testing import check_backbone_spec
from mfkit_audio.backbone import SPEC as UNET
from mfkit_audio.frame_dit import SPEC as DIT

SHAPE = (1, 12, 11)  # odd sizes: padding and cropping are exercised
DIGITS = ClassCondition(["zero", "one", "two"])


@pytest.mark.parametrize("condition", [DIGITS, VectorCondition(2)])
def test_spec_unet(condition):
    classes = len(condition.names) if isinstance(condition, ClassCondition) else None
    check_backbone_spec(UNET, DataInfo(SHAPE, classes, condition), {"channels": 8, "multipliers": [1, 2],
                                                                    "attention": condition is DIGITS, "heads": 2})


@pytest.mark.parametrize("condition, patch", [(DIGITS, 2), (None, 1)])
def test_frame_dit(condition, patch):
    classes = len(condition.names) if condition else None
    check_backbone_spec(DIT, DataInfo(SHAPE, classes, condition), {"width": 16, "depth": 2, "heads": 2, "patch": patch})
