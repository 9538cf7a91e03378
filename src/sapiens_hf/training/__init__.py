"""Fine-tuning Sapiens with the Hugging Face `Trainer`: the original recipe's optimiser, its data augmentations, dataset
loaders and the shared plumbing of the `examples/run_*.py` scripts. The recipe is that of the original task configs
(github.com/facebookresearch/sapiens: `pose/configs/sapiens_pose/`, `seg/configs/sapiens_{seg,depth,normal}/`).

- `optimization`: layer-wise LR decay groups, `SapiensTrainingArguments`, `SapiensTrainer`, `train_and_evaluate`.
- `data`: what pose and dense data share: `TransformedDataset`, column readers, the data check, albumentations helpers.
- `pose_data`: top-down pose: COCO keypoint files, the original augmentations, UDP crops and heatmap targets.
- `dense_data`: segmentation / depth / normals: folders or Hub datasets, the original augmentations, targets.
- `arguments`: the example scripts' command line: `ModelArguments`, presets, loading the model and image processor.
- `sapiens2`: fine-tuning transformers' Sapiens2 models with the same scripts: release-size presets, the original
  losses (computed by `SapiensTrainer`).

Every public name is importable from `sapiens_hf.training` itself.
"""

from .arguments import (
    ModelArguments,
    load_image_processor,
    load_model,
    parse_arguments,
    parse_config_overrides,
    setup_deepspeed_on_cpu,
    uses_sapiens2,
)
from .data import (
    IMAGE_EXTENSIONS,
    DataCheckArguments,
    TransformedDataset,
    list_images,
    photometric_distortion,
    prepare_datasets,
    read_array,
    read_image,
)
from .dense_data import (
    DEFAULT_TARGETS,
    DENSE_TASKS,
    DenseAugmentation,
    DenseDataArguments,
    DenseTransform,
    load_dense_folder,
    load_dense_splits,
    segmentation_flip_pairs,
)
from .optimization import (
    NO_DECAY_NAMES,
    SapiensTrainer,
    SapiensTrainingArguments,
    last_complete_checkpoint,
    layer_id,
    parameter_groups,
    train_and_evaluate,
)
from .pose_data import PoseAugmentation, PoseTransform, load_coco_keypoints


__all__ = [
    # optimization
    "NO_DECAY_NAMES",
    "parameter_groups",
    "layer_id",
    "SapiensTrainingArguments",
    "SapiensTrainer",
    "last_complete_checkpoint",
    "train_and_evaluate",
    # data
    "TransformedDataset",
    "read_image",
    "read_array",
    "DataCheckArguments",
    "prepare_datasets",
    "photometric_distortion",
    "IMAGE_EXTENSIONS",
    "list_images",
    # pose_data
    "load_coco_keypoints",
    "PoseAugmentation",
    "PoseTransform",
    # dense_data
    "DENSE_TASKS",
    "load_dense_folder",
    "segmentation_flip_pairs",
    "DenseAugmentation",
    "DenseTransform",
    "DenseDataArguments",
    "DEFAULT_TARGETS",
    "load_dense_splits",
    # arguments
    "ModelArguments",
    "parse_arguments",
    "setup_deepspeed_on_cpu",
    "load_model",
    "parse_config_overrides",
    "load_image_processor",
    "uses_sapiens2",
]
