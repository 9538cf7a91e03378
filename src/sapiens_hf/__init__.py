"""Sapiens (v1) human-vision foundation models as native Hugging Face transformers models.

`import sapiens_hf` registers the config, models, image processor and pipelines with transformers' Auto classes.
"""

from transformers import (
    AutoBackbone,
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForMaskedImageModeling,
    AutoModelForNormalEstimation,
    AutoModelForPoseEstimation,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_sapiens import SAPIENS_PRESETS, SapiensConfig
from .image_processing_sapiens import SapiensImageProcessorPil
from .modeling_sapiens import (
    SapiensBackbone,
    SapiensForDepthEstimation,
    SapiensForMaskedImageModeling,
    SapiensForNormalEstimation,
    SapiensForPoseEstimation,
    SapiensForSemanticSegmentation,
    SapiensModel,
    SapiensPreTrainedModel,
)
from .pipelines import (
    SapiensDepthPipeline,
    SapiensNormalPipeline,
    SapiensPosePipeline,
    SapiensSegmentationPipeline,
    register_pipelines,
)

__version__ = "0.1.0"


def _register() -> None:
    model_type = SapiensConfig.model_type
    if model_type in CONFIG_MAPPING and CONFIG_MAPPING[model_type] is not SapiensConfig:
        raise ImportError(
            f"transformers {__import__('transformers').__version__} already defines a model type {model_type!r} "
            f"({CONFIG_MAPPING[model_type].__module__}), which clashes with sapiens_hf. Install a transformers "
            "version this package supports (see setup.py) or a sapiens_hf release that handles it."
        )
    AutoConfig.register(model_type, SapiensConfig, exist_ok=True)
    for auto_class, model_class in (
        (AutoModel, SapiensModel),
        (AutoBackbone, SapiensBackbone),
        (AutoModelForPoseEstimation, SapiensForPoseEstimation),
        (AutoModelForSemanticSegmentation, SapiensForSemanticSegmentation),
        (AutoModelForDepthEstimation, SapiensForDepthEstimation),
        (AutoModelForNormalEstimation, SapiensForNormalEstimation),
        (AutoModelForMaskedImageModeling, SapiensForMaskedImageModeling),
        (AutoModelForPreTraining, SapiensForMaskedImageModeling),
    ):
        auto_class.register(SapiensConfig, model_class, exist_ok=True)


_register()
AutoImageProcessor.register(SapiensConfig, image_processor_classes={"pil": SapiensImageProcessorPil}, exist_ok=True)
register_pipelines()

from .convert import convert_original_checkpoint  # noqa: E402  (needs the registered classes)

__all__ = [
    "convert_original_checkpoint",
    "SAPIENS_PRESETS",
    "SapiensConfig",
    "SapiensPreTrainedModel",
    "SapiensModel",
    "SapiensBackbone",
    "SapiensForPoseEstimation",
    "SapiensForSemanticSegmentation",
    "SapiensForDepthEstimation",
    "SapiensForNormalEstimation",
    "SapiensForMaskedImageModeling",
    "SapiensImageProcessorPil",
    "SapiensPosePipeline",
    "SapiensSegmentationPipeline",
    "SapiensDepthPipeline",
    "SapiensNormalPipeline",
]
from . import hub  # noqa: E402,F401  (registers the loader of original Hub repos with from_pretrained)
