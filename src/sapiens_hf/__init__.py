"""Sapiens human-vision foundation models as native Hugging Face transformers models, and transformers' own Sapiens2
models through the same pipelines, command line and batch tools.

`import sapiens_hf` registers the config, models, image processor and pipelines with transformers' Auto classes (and
lets them resolve Meta's original releases, see `sapiens_hf.releases`), so that `AutoModel`, `AutoImageProcessor` and
`pipeline("sapiens-depth", ...)` find them.

Where torch or transformers cannot be imported — a deployment of an exported graph with onnxruntime alone — the
package holds only what needs neither: `sapiens_hf.runtime` and the NumPy geometry it runs on.
"""

__version__ = "0.1.0"  # before the imports: `export` (imported by `pipelines`) reads it

try:
    import torch  # noqa: F401  (the models need it)
    import transformers
except ImportError:
    transformers = None

if transformers is None:
    __all__ = []
else:
    from transformers import AutoConfig, AutoImageProcessor, Sapiens2Config
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

    from . import modeling_sapiens
    from .configuration_sapiens import SAPIENS_PRESETS, SapiensConfig
    from .convert import convert_original_checkpoint
    from .image_processing_sapiens import SapiensImageProcessorPil
    from .image_processing_sapiens2 import Sapiens2ImageProcessorPil
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
        DetectorUnavailableError,
        MaskModelUnavailableError,
        SapiensDepthPipeline,
        SapiensMattingPipeline,
        SapiensNormalPipeline,
        SapiensPointmapPipeline,
        SapiensPosePipeline,
        SapiensSegmentationPipeline,
        register_pipelines,
    )
    from .releases import install_hooks
    from .tasks import DEFAULT_DETECTOR, V1_TASKS


    def _register() -> None:
        """Registers the config, every task's model class with its Auto classes, the image processor and the pipelines
        with transformers, and lets `from_pretrained` resolve Meta's original releases."""
        model_type = SapiensConfig.model_type
        if CONFIG_MAPPING.get(model_type, SapiensConfig) is not SapiensConfig:
            raise ImportError(
                f"transformers {transformers.__version__} already defines a model type {model_type!r} "
                f"({CONFIG_MAPPING[model_type].__module__}), which clashes with sapiens_hf. Install a transformers "
                "version this package supports (see setup.py) or a sapiens_hf release that handles it."
            )
        AutoConfig.register(model_type, SapiensConfig, exist_ok=True)
        for task in V1_TASKS.values():
            for auto_class in (task.auto_class, *task.extra_auto_classes):
                getattr(transformers, auto_class).register(SapiensConfig, getattr(modeling_sapiens, task.model_class),
                                                           exist_ok=True)
        AutoImageProcessor.register(SapiensConfig, image_processor_classes={"pil": SapiensImageProcessorPil}, exist_ok=True)
        # Sapiens2's models are transformers' own; its processor needs torchvision, so this one is its "pil" backend,
        # which AutoImageProcessor picks where torchvision is missing (and gives for backend="pil"). Registered on the
        # mapping itself: `AutoImageProcessor.register` refuses transformers' torchvision entry where torchvision is
        # missing (a placeholder class), which stays named here for where it is installed.
        IMAGE_PROCESSOR_MAPPING.register(
            Sapiens2Config, {"torchvision": "Sapiens2ImageProcessor", "pil": Sapiens2ImageProcessorPil}, exist_ok=True
        )
        register_pipelines()
        install_hooks()


    _register()

    __all__ = [
        "DEFAULT_DETECTOR",
        "SAPIENS_PRESETS",
        "DetectorUnavailableError",
        "MaskModelUnavailableError",
        "SapiensBackbone",
        "SapiensConfig",
        "SapiensDepthPipeline",
        "SapiensForDepthEstimation",
        "SapiensForMaskedImageModeling",
        "SapiensForNormalEstimation",
        "SapiensForPoseEstimation",
        "SapiensForSemanticSegmentation",
        "Sapiens2ImageProcessorPil",
        "SapiensImageProcessorPil",
        "SapiensMattingPipeline",
        "SapiensModel",
        "SapiensNormalPipeline",
        "SapiensPointmapPipeline",
        "SapiensPosePipeline",
        "SapiensPreTrainedModel",
        "SapiensSegmentationPipeline",
        "convert_original_checkpoint",
    ]
