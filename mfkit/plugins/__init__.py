"""The plugin API: spec types that plugins register, and their discovery through entry points."""
from mfkit.plugins.discovery import (
    BACKBONE_GROUP,
    MODALITY_GROUP,
    PluginProblem,
    Registry,
    UnknownPluginError,
    registry,
)
from mfkit.plugins.spec import PLUGIN_API_VERSION, BackboneSpec, DataInfo, Modality, ModalitySpec

__all__ = [
    "BACKBONE_GROUP", "BackboneSpec", "DataInfo", "MODALITY_GROUP", "Modality", "ModalitySpec",
    "PLUGIN_API_VERSION", "PluginProblem", "Registry", "UnknownPluginError", "registry",
]
