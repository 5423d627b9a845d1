"""The plugin's own tests: mfkit's reusable contract checks, run as a third-party author would."""
from mfkit.plugins import DataInfo
from mfkit.testing import check_backbone_spec, check_modality_spec

from mfkit_sines.backbone import SPEC as BACKBONE
from mfkit_sines.modality import SPEC as MODALITY


def test_modality_contract(tmp_path):
    check_modality_spec(MODALITY, tmp_path, {"size": 32})


def test_backbone_contract():
    check_backbone_spec(BACKBONE, DataInfo((1, 64), num_classes=3))
    check_backbone_spec(BACKBONE, DataInfo((2, 16), num_classes=None))
