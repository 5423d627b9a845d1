"""mfkit's contract checks, run on the modality (corpus and folder) and both backbones."""
from __future__ import annotations

import warnings

import pytest

from mfkit.plugins import ClassCondition, DataInfo
from mfkit.testing import check_backbone_spec, check_modality_spec
from mfkit_points.modality import SPEC as MODALITY
from mfkit_points.nets.point_set import SPEC as POINT_SET
from mfkit_points.nets.point_transformer import SPEC as POINT_TRANSFORMER

TINY_CORPUS = {"num_points": 64, "corpus_train_per_class": 3, "corpus_val_per_class": 1}
SHAPES = DataInfo((48, 3), 7, ClassCondition(["box", "ellipsoid", "cylinder", "cone", "capsule", "torus", "vase"]))


def test_corpus_modality_contract(tmp_path, context):
    check_modality_spec(MODALITY, tmp_path, TINY_CORPUS, context)


def test_folder_modality_contract(tmp_path, context, mesh_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broken files' warning is tested in test_folders
        modality = check_modality_spec(MODALITY, tmp_path / "out", {"folder": str(mesh_folder), "num_points": 64},
                                       context)
    assert modality.class_names == ["ball", "cube"]
    assert set(modality.state_dict()) == {"class_names", "scale"}


@pytest.mark.parametrize("info", [SHAPES, DataInfo((32, 3))], ids=["classes", "unconditional"])
def test_point_set_contract(info):
    check_backbone_spec(POINT_SET, info, {"width": 32, "hidden": 48, "depth": 2})


@pytest.mark.parametrize("info", [SHAPES, DataInfo((32, 3))], ids=["classes", "unconditional"])
def test_point_transformer_contract(info):
    check_backbone_spec(POINT_TRANSFORMER, info, {"width": 32, "depth": 2, "heads": 4})


@pytest.mark.parametrize("spec", [POINT_SET, POINT_TRANSFORMER], ids=["point_set", "point_transformer"])
def test_backbones_refuse_data_that_are_not_point_sets(spec, context):
    with pytest.raises(ValueError, match="points, coordinates"):
        spec.build(spec.params_model(), DataInfo((3, 32, 32)), context)
