"""The Sapiens tasks, in one table that everything else reads: the config's head defaults (by task name, in
`configuration_sapiens.TASK_DEFAULTS`), the converter, the registration with transformers' Auto classes and
pipelines, the command line's choices, the model cards and the training scripts.

Adding a task means one `Task` entry here, its model class and head in `modeling_sapiens.py`, its head defaults in
`TASK_DEFAULTS` and, for a pipeline, its class in `pipelines.py`. Classes are named, not imported, so that reading
the table imports neither torch nor transformers (the command line builds its `--help` from it).
"""

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One thing a Sapiens model can be built for.

    `name` is what the converter, `SapiensConfig.from_preset` and the training scripts call it; `aliases` are
    accepted wherever a task name is typed. `model_class` is the `modeling_sapiens` class and `auto_class` the
    transformers Auto class it is registered with; `hub_tag` is the Hub `pipeline_tag` of its model cards.
    `pipeline`/`pipeline_class` name its `sapiens-*` pipeline and `default_checkpoint` what that pipeline loads without
    `model=`. `training_target` is where the dense training scripts find its labels: `(Hub dataset column, folder)`.
    `file_tag` names its results in the files the command line writes (`photo_seg.png`).
    """

    name: str
    model_class: str
    auto_class: str
    hub_tag: str
    description: str
    aliases: tuple[str, ...] = ()
    pipeline: str | None = None
    pipeline_class: str | None = None
    default_checkpoint: str | None = None
    training_target: tuple[str, str] | None = None
    extra_auto_classes: tuple[str, ...] = ()
    file_tag: str = ""

    def __post_init__(self):
        if not self.file_tag:
            object.__setattr__(self, "file_tag", self.name)

    @property
    def has_head(self) -> bool:
        """Whether the model ends in a task head that the pipelines and the post-processing read."""
        return self.pipeline is not None


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("pose", "SapiensForPoseEstimation", "AutoModelForPoseEstimation", "keypoint-detection",
             "top-down 2D human pose estimation", pipeline="sapiens-pose", pipeline_class="SapiensPosePipeline",
             default_checkpoint="facebook/sapiens-pose-0.3b"),
        Task("segmentation", "SapiensForSemanticSegmentation", "AutoModelForSemanticSegmentation",
             "image-segmentation", "body-part segmentation", aliases=("seg",), file_tag="seg",
             pipeline="sapiens-segmentation",
             pipeline_class="SapiensSegmentationPipeline", default_checkpoint="facebook/sapiens-seg-0.3b",
             training_target=("label", "labels")),
        Task("depth", "SapiensForDepthEstimation", "AutoModelForDepthEstimation", "depth-estimation",
             "relative depth estimation of people", pipeline="sapiens-depth", pipeline_class="SapiensDepthPipeline",
             default_checkpoint="facebook/sapiens-depth-0.3b", training_target=("depth", "depth")),
        Task("normal", "SapiensForNormalEstimation", "AutoModelForNormalEstimation", "image-to-image",
             "surface normal estimation of people", aliases=("normals",), pipeline="sapiens-normal",
             pipeline_class="SapiensNormalPipeline", default_checkpoint="facebook/sapiens-normal-0.3b",
             training_target=("normal", "normals")),
        Task("pretraining", "SapiensForMaskedImageModeling", "AutoModelForMaskedImageModeling",
             "image-feature-extraction", "MAE pretraining (encoder + decoder)", aliases=("mae", "pretrain"),
             extra_auto_classes=("AutoModelForPreTraining",)),
        Task("model", "SapiensModel", "AutoModel", "image-feature-extraction", "human-centric image features",
             aliases=("encoder",)),
        Task("backbone", "SapiensBackbone", "AutoBackbone", "image-feature-extraction",
             "feature maps for dense heads"),
    )
}
PIPELINE_TASKS: dict[str, Task] = {task.pipeline: task for task in TASKS.values() if task.pipeline}
DENSE_TASKS = tuple(name for name, task in TASKS.items() if task.training_target)


def get_task(name: str) -> Task:
    """The task called `name` (a task name, an alias or a `sapiens-*` pipeline name); a ValueError that lists the
    choices (and the closest one) for anything else."""
    for task in TASKS.values():
        if name in (task.name, task.pipeline, *task.aliases):
            return task
    names = sorted({alias for task in TASKS.values() for alias in (task.name, *task.aliases)})
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"Unknown task {name!r}{hint}; choose one of {names}")


def task_of_class(class_name: str | None) -> Task | None:
    """The task a Sapiens model class (by name, as in `config.architectures`) is built for; None for other names."""
    return next((task for task in TASKS.values() if task.model_class == class_name), None)


__all__ = ["DENSE_TASKS", "PIPELINE_TASKS", "TASKS", "Task", "get_task", "task_of_class"]
