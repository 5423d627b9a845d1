"""The plugin API: spec types that plugins register, and their discovery through entry points."""
from mfkit.core.conditions import ConditionOps, LabelConditions, StructConditions, TensorConditions
from mfkit.plugins.discovery import (
    BACKBONE_GROUP,
    EVALUATOR_GROUP,
    MODALITY_GROUP,
    RECIPE_GROUP,
    PluginProblem,
    PluginRecipe,
    Registry,
    UnknownPluginError,
    registry,
)
from mfkit.plugins.spec import (
    PLUGIN_API_VERSION,
    SUPPORTED_API_VERSIONS,
    BackboneSpec,
    ClassCondition,
    ConditionSpec,
    DataInfo,
    Evaluator,
    EvaluatorSpec,
    Modality,
    ModalitySpec,
    PluginContext,
    VectorCondition,
    default_cache_dir,
    file_signature,
    save_samples,
    unpack_batch,
)

__all__ = [
    "BACKBONE_GROUP", "BackboneSpec", "ClassCondition", "ConditionOps", "ConditionSpec", "DataInfo", "EVALUATOR_GROUP",
    "Evaluator", "EvaluatorSpec",
    "LabelConditions", "MODALITY_GROUP", "Modality", "ModalitySpec", "PLUGIN_API_VERSION", "PluginContext",
    "PluginProblem", "PluginRecipe", "RECIPE_GROUP", "Registry", "SUPPORTED_API_VERSIONS", "StructConditions",
    "TensorConditions", "UnknownPluginError", "VectorCondition", "default_cache_dir", "file_signature", "registry", "save_samples",
    "unpack_batch",
]
