"""Pipelines for the four Sapiens tasks, registered with transformers on `import sapiens_hf`:

    pipeline("sapiens-pose")          top-down keypoints (boxes given, found by a person detector, or the whole image)
    pipeline("sapiens-segmentation")  28-class body-part segmentation
    pipeline("sapiens-depth")         relative depth
    pipeline("sapiens-normal")        surface normals

Each takes single images or lists (PIL images, arrays, tensors, file paths or URLs) and the usual `batch_size`,
`device` and `dtype` arguments; results are at the original image size. The built-in `depth-estimation` and
`image-segmentation` pipelines work with the Sapiens models as well. `model=` may also name one of Meta's original
releases (e.g. "facebook/sapiens-depth-1b"), converted once and cached (see `sapiens_hf.releases`), or a folder
written by `sapiens-hf export` (`sapiens_hf.exported_model`, over the runner of `sapiens_hf.runtime`).
`save_pretrained` writes a plain checkpoint (model + processor), `push_to_hub` goes through
`sapiens_hf.hub.push_to_hub`.
"""

import os

import numpy as np
import PIL.Image
import torch
import transformers
from transformers import Pipeline, pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline

from .backends import Choice, choose
from .exported_model import SapiensExportedModel
from .geometry import check_boxes
from .image_io import read_image
from .image_processing_sapiens import SapiensImageProcessorPil
from .metadata import model_flip_pairs
from .modeling_sapiens import SapiensPoseEstimatorOutput
from .runtime import is_export_folder
from .tasks import PIPELINE_TASKS, Task, get_task, task_of_class
from .validation import check_kernel_size, check_number
from .visualization import segmentation_to_image, visualize_depth, visualize_normals


class WrongModelError(ValueError):
    """A model of another task, or without a task head, given to a Sapiens pipeline."""


class _SapiensPipelineMixin:
    """Loading flags, the model check and the default image processor shared by the Sapiens pipelines."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        model = kwargs.get("model", args[0] if args else None)
        if isinstance(model, SapiensExportedModel):
            # An export runs on the CPU whatever accelerator the machine has, in the dtype it was traced in
            # (transformers' loader loads it for another dtype anyway, with a warning only).
            kwargs["device"] = "cpu" if kwargs.get("device") is None else kwargs["device"]
            if kwargs.get("dtype") not in (None, "auto", model.dtype):
                raise ValueError(f"{model.name_or_path} was exported in {model.manifest['dtype']}, not "
                                 f"{kwargs['dtype']}: export it again with --dtype")
        super().__init__(*args, **kwargs)
        self._check_model()
        if self.image_processor is None:  # a pipeline class built directly: the released checkpoints use the defaults
            self.image_processor = SapiensImageProcessorPil()

    @property
    def sapiens_task(self) -> Task:
        """The task whose `pipeline_class` is this pipeline's class (or one it derives from)."""
        names = [cls.__name__ for cls in type(self).__mro__]
        return next(task for name in names for task in PIPELINE_TASKS.values() if task.pipeline_class == name)

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, (list, tuple)) and not inputs:  # transformers would fail with an IndexError
            raise ValueError(f"No images given to the {self.task} pipeline: pass an image or a non-empty list")
        return super().__call__(inputs, *args, **kwargs)

    def _check_model(self) -> None:
        """Rejects a model of another task: its class, or the task head class it was saved from
        (`config.architectures`). The pipeline's auto class loads another task's head from its checkpoint (a pose
        model's 17 keypoints would become 17 segmentation classes), so the class alone does not tell. (An encoder
        checkpoint, pretraining or backbone, gives a new head to be fine-tuned: the model's own class counts.)"""
        class_name = getattr(self.model, "exported_from", type(self.model).__name__)  # an export: what it was made of
        saved_as = task_of_class((self.model.config.architectures or [None])[0])
        name = saved_as.model_class if saved_as is not None and saved_as.has_head else class_name
        wanted = self.sapiens_task
        if class_name == name == wanted.model_class:
            return
        task = task_of_class(name)
        model = name if name == class_name else f"{class_name} loaded from a {name} checkpoint"
        if task is not None and task.has_head:
            problem = f'a {task.name} model ({model}); use pipeline("{task.pipeline}", ...) for it'
        elif task is not None and task.encoder_only:
            problem = f"a model without a task head ({model}); fine-tune one for the task first"
        elif task is not None:
            problem = f"a {task.name} model ({model}); fine-tune it for the task first"
        else:
            problem = f"a {model}"
        raise WrongModelError(f"The {wanted.pipeline} pipeline needs a {wanted.model_class}, got {problem}")

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """Saves the model and the image processor only: a plain checkpoint that `pipeline(task, model=directory)`
        loads after `import sapiens_hf`. (transformers' `Pipeline.save_pretrained` would also write
        `custom_pipelines` into config.json and copy this module, after which `pipeline()` demands
        `trust_remote_code=True`, and this module cannot run without the package anyway.)"""
        if os.path.isfile(save_directory):
            raise ValueError(f"Provided path ({save_directory}) should be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        self.model.save_pretrained(save_directory, **kwargs)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(save_directory, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """`sapiens_hf.hub.push_to_hub`: the model and the processor with a generated model card, stale weight files
        of an earlier push deleted in the same commit."""
        from .hub import push_to_hub

        return push_to_hub(self, repo_id, **kwargs)


class _SapiensDensePipeline(_SapiensPipelineMixin, Pipeline):
    """Whole-image tasks: one resized image per forward pass, maps resized back to the image."""

    def _sanitize_parameters(self, timeout=None, flip_test=None):
        if flip_test and not self.sapiens_task.flip_test:
            raise ValueError(f"The {self.task or type(self).__name__} pipeline has no flip test")
        preprocess_params = {} if timeout is None else {"timeout": timeout}
        forward_params = {} if flip_test is None else {"flip_test": flip_test}
        return preprocess_params, forward_params, {}

    def preprocess(self, image, timeout=None):
        image = read_image(image, timeout, self.image_processor.max_image_pixels)
        model_inputs = self.image_processor(image, return_tensors="pt").to(self.dtype)
        model_inputs["target_size"] = image.shape[:2]
        return model_inputs

    def _forward(self, model_inputs, flip_test=False):
        pixel_values, output = model_inputs["pixel_values"], self.sapiens_task.output
        model_outputs = {
            "target_size": model_inputs["target_size"],
            output: getattr(self.model(pixel_values=pixel_values), output),
        }
        if flip_test:
            model_outputs[f"{output}_flipped"] = getattr(self.model(pixel_values=pixel_values.flip(-1)), output)
        return model_outputs

    def _outputs(self, model_outputs, suffix=""):
        output = self.sapiens_task.output
        return self.sapiens_task.output_type()(**{output: model_outputs[output + suffix]})


class SapiensSegmentationPipeline(_SapiensDensePipeline):
    """Body-part segmentation. Returns `{"segmentation": (H, W) class indices, "label_map": palettised PIL image}`
    (the class names are `model.config.id2label`)."""

    def postprocess(self, model_outputs):
        segmentation = self.image_processor.post_process_semantic_segmentation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]]
        )[0]
        return {"segmentation": segmentation, "label_map": segmentation_to_image(segmentation)}


class SapiensDepthPipeline(_SapiensDensePipeline):
    """Relative depth (larger = farther). Returns `{"predicted_depth": (H, W) tensor, "depth": colour-mapped PIL
    image}`. `flip_test=True` averages with the prediction on the mirrored image, as the original demo's `--flip`."""

    def postprocess(self, model_outputs):
        flipped = self._outputs(model_outputs, "_flipped") if "predicted_depth_flipped" in model_outputs else None
        depth = self.image_processor.post_process_depth_estimation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]], outputs_flipped=flipped
        )[0]["predicted_depth"]
        return {"predicted_depth": depth, "depth": visualize_depth(depth)}


class SapiensNormalPipeline(_SapiensDensePipeline):
    """Surface normals. Returns `{"normals": (3, H, W) unit vectors, "normal_map": RGB PIL image}`."""

    def postprocess(self, model_outputs):
        normals = self.image_processor.post_process_normal_estimation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]]
        )[0]["normals"]
        return {"normals": normals, "normal_map": visualize_normals(normals)}


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the xyxy boxes kept by greedy NMS, best score first."""
    order, keep = np.argsort(-scores, kind="stable"), []
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while len(order):
        best, order = order[0], order[1:]
        keep.append(best)
        top_left = np.maximum(boxes[best, :2], boxes[order, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[order, 2:])
        intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        order = order[intersection / (areas[best] + areas[order] - intersection) <= iou_threshold]
    return np.array(keep, dtype=np.int64)


class SapiensPosePipeline(_SapiensPipelineMixin, ChunkPipeline):
    """Top-down pose estimation: one crop per person box, decoded into keypoints in image coordinates.

    Boxes (COCO `[x, y, width, height]`) come from `boxes=` (per image for a list of images), from `{"image": ...,
    "boxes": [...]}` inputs, or from a person `detector` (a transformers object-detection pipeline, a model id for
    one, or any callable returning that pipeline's output); without them, or when nobody is detected, the whole image
    is the box, as in the original demo. Detections labelled `person_label` scoring above `detector_threshold` are
    kept after NMS (IoU 0.3, as the original demo). `flip_test=True` averages with the heatmaps of the mirrored crops
    (the released configs' test setting).

    Returns per image a list of people: `keypoints` `(K, 2)`, `scores` `(K,)`, `labels` (keypoint indices),
    `bbox_xywh` (the box, as the `boxes` given or detected: x, y, width, height) and `bbox_score` (the detector's score, `None` for given boxes). Keypoint names:
    `model.config.id2label`.
    """

    crops_at_once = 8  # person crops made at a time (a 1024×768 crop is 19 MB): memory stays bounded per image

    def __init__(self, *args, **kwargs):
        self._detector = (None, None)  # the last detector loaded by name, and its name
        super().__init__(*args, **kwargs)

    def __call__(self, inputs, boxes=None, **kwargs):
        if boxes is not None:
            if isinstance(inputs, (list, tuple)):
                if len(boxes) != len(inputs):
                    raise ValueError(f"Got boxes for {len(boxes)} images but {len(inputs)} images")
                inputs = [{"image": image, "boxes": image_boxes} for image, image_boxes in zip(inputs, boxes)]
            else:
                inputs = {"image": inputs, "boxes": boxes}
        # Malformed boxes fail before any image is processed (whether they overlap their image is checked with it).
        for item in inputs if isinstance(inputs, (list, tuple)) else [inputs]:
            if isinstance(item, dict):
                check_boxes(item.get("boxes"))
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        timeout=None,
        detector=None,
        detector_threshold=None,
        person_label=None,
        flip_test=None,
        kernel_size=None,
        threshold=None,
    ):
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if timeout is not None:
            preprocess_params["timeout"] = timeout
        if detector is not None:
            preprocess_params["detector"] = self._resolve_detector(detector)
        if detector_threshold is not None:
            preprocess_params["detector_threshold"] = check_number(detector_threshold, "detector_threshold", unit=True)
        if person_label is not None:
            preprocess_params["person_label"] = person_label
        if flip_test is not None:
            forward_params["flip_pairs"] = self.flip_pairs if flip_test else None
        if kernel_size is not None:
            forward_params["kernel_size"] = check_kernel_size(kernel_size)
        if threshold is not None:
            postprocess_params["threshold"] = check_number(threshold, "threshold")
        return preprocess_params, forward_params, postprocess_params

    def _resolve_detector(self, detector):
        if not isinstance(detector, str):
            if not callable(detector):
                raise TypeError("detector must be an object-detection pipeline, a model id or a callable")
            return detector
        if self._detector[0] != detector:  # one at a time: a server's memory does not grow with each name asked for
            self._detector = (detector, pipeline("object-detection", model=detector, device=self.device))
        return self._detector[1]

    def detect_people(self, image: np.ndarray, detector, threshold: float = 0.3, person_label: str = "person"):
        """Person boxes `(n, 4)` (x, y, width, height) and their scores, best first."""
        image = PIL.Image.fromarray(image)
        detections = detector(image, threshold=threshold) if isinstance(detector, Pipeline) else detector(image)
        people = [
            d
            for d in detections
            if d["label"].lower() == person_label.lower()
            and d["score"] > threshold
            and d["box"]["xmax"] > d["box"]["xmin"]
            and d["box"]["ymax"] > d["box"]["ymin"]
        ]
        xyxy = np.array([[d["box"][k] for k in ("xmin", "ymin", "xmax", "ymax")] for d in people], np.float64)
        xyxy = xyxy.reshape(-1, 4)
        scores = np.array([d["score"] for d in people], dtype=np.float64)
        keep = non_max_suppression(xyxy, scores, iou_threshold=0.3)
        return np.concatenate([xyxy[keep, :2], xyxy[keep, 2:] - xyxy[keep, :2]], axis=1), scores[keep]

    def preprocess(self, inputs, timeout=None, detector=None, detector_threshold=0.3, person_label="person"):
        image, boxes = (inputs["image"], inputs.get("boxes")) if isinstance(inputs, dict) else (inputs, None)
        image = read_image(image, timeout, self.image_processor.max_image_pixels)
        height, width = image.shape[:2]
        box_scores = None
        if boxes is None and detector is not None:
            boxes, box_scores = self.detect_people(image, detector, detector_threshold, person_label)
        boxes = check_boxes(boxes, height, width)
        if box_scores is None or len(box_scores) == 0:
            box_scores = [None] * len(boxes)
        for start in range(0, len(boxes), self.crops_at_once):
            group = boxes[start : start + self.crops_at_once]
            model_inputs = self.image_processor(image, boxes=[group], return_tensors="pt")  # crops stay float64
            for offset, box in enumerate(group):
                index = start + offset
                yield {
                    "pixel_values": model_inputs["pixel_values"][offset : offset + 1].to(self.dtype),
                    "box": torch.from_numpy(box)[None],
                    "crop_center": model_inputs["crop_center"][offset : offset + 1],
                    "crop_scale": model_inputs["crop_scale"][offset : offset + 1],
                    "box_score": None if box_scores[index] is None else float(box_scores[index]),
                    "is_last": index == len(boxes) - 1,
                }

    @property
    def flip_pairs(self) -> list[list[int]]:
        """Left/right keypoint pairs of the flip test: the model's, else those of the released set with as many
        keypoints (COCO 17, COCO-WholeBody 133, Goliath 308)."""
        pairs = model_flip_pairs(self.model.config)
        if pairs is None:
            raise ValueError(
                f"flip_test needs the left/right keypoint pairs of this {self.model.config.num_labels}-keypoint "
                "model: set model.config.flip_pairs"
            )
        return pairs

    def _forward(self, model_inputs, flip_pairs=None, kernel_size=11):
        """The keypoints of a batch of crops, decoded here so that only they (not the heatmaps, 60 MB a person at
        308 keypoints) wait for the image's other people."""
        pixel_values = model_inputs.pop("pixel_values")
        outputs, flipped = self.model(pixel_values=pixel_values), None
        if flip_pairs is not None:  # flip test: the model mirrors the flipped crops' heatmaps back, swaps left/right
            flipped = self.model(pixel_values=pixel_values.flip(-1), flip_pairs=flip_pairs)
        people = self.image_processor.post_process_pose_estimation(
            SapiensPoseEstimatorOutput(heatmaps=outputs.heatmaps), boxes=[model_inputs["box"].tolist()],
            outputs_flipped=flipped, kernel_size=kernel_size, crop_center=model_inputs["crop_center"],
            crop_scale=model_inputs["crop_scale"],
        )[0]
        return {"keypoints": torch.stack([person["keypoints"] for person in people]),
                "scores": torch.stack([person["scores"] for person in people]),
                "box": model_inputs["box"], "box_score": model_inputs["box_score"], "is_last": model_inputs["is_last"]}

    def postprocess(self, all_outputs, threshold=None):
        people = []
        for output in all_outputs:
            person = {"keypoints": output["keypoints"][0], "scores": output["scores"][0],
                      "labels": torch.arange(output["keypoints"].shape[1]), "bbox_xywh": output["box"][0].float()}
            if threshold is not None:  # as post_process_pose_estimation(threshold=)
                keep = person["scores"] > threshold
                person.update({key: person[key][keep] for key in ("keypoints", "scores", "labels")})
            people.append({**person, "bbox_score": output["box_score"]})
        return people


def load_task_pipeline(task: str, model: str | None = None, *, device=None, dtype=None, backend: str = "torch",
                       images: int | None = None, report=None, **config_overrides):
    """The `sapiens-*` pipeline of `task` for a model id or path (`from_pretrained` takes it; default: the task's
    released 0.3B model), with its processor (the released settings when the checkpoint has none). The model is
    loaded through the task's Sapiens class in `dtype` (default float32), a folder of `sapiens-hf export` as
    `SapiensExportedModel` (default: the dtype it was exported in), and the pipeline refuses a model of another task
    (`WrongModelError`) before any prediction. Used by `sapiens-hf predict`, `annotate` and the demo.

    `backend` is "torch" (the eager model), "onnxruntime" (its ONNX export, made once into the cache and checked) or
    "auto" (the faster on this machine for a run of `images` images, None: no known end; see
    `sapiens_hf.backends`); `dtype="int8"` runs the statically quantised ONNX graph. An export folder runs as it was
    exported, whatever the backend. `report`, if given, is called with one line saying which backend runs and why."""
    from transformers import AutoConfig, AutoImageProcessor

    from . import modeling_sapiens

    task = get_task(task)
    model = model or task.default_checkpoint
    if is_export_folder(model):
        if config_overrides:
            raise ValueError(f"{model} is an exported graph: its configuration is fixed ({sorted(config_overrides)})")
        int8 = dtype == "int8"  # its int8 graph, if it was exported with one
        loaded = SapiensExportedModel.from_pretrained(model, **({"int8": True} if int8 else {"dtype": dtype}))
        choice = Choice("onnxruntime", f"an export folder{', its int8 graph' if int8 else ''}")
    else:
        # Another task's checkpoint is refused from its config, before its weights load into the wrong head.
        saved_as = task_of_class((AutoConfig.from_pretrained(model, **config_overrides).architectures or [None])[0])
        if saved_as is not None and saved_as.has_head and saved_as is not task:
            raise WrongModelError(f"The {task.pipeline} pipeline needs a {task.model_class}, got a {saved_as.name} "
                                  f"model ({saved_as.model_class}); use pipeline(\"{saved_as.pipeline}\", ...) for it")
        weights = torch.float32 if dtype in (None, "int8") else dtype
        loaded = getattr(modeling_sapiens, task.model_class).from_pretrained(model, dtype=weights, **config_overrides)
    try:
        processor = AutoImageProcessor.from_pretrained(model)
    except (OSError, ValueError):  # a folder saved without its processor: the released settings
        processor = SapiensImageProcessorPil()
    if not isinstance(loaded, SapiensExportedModel):
        choice = choose(loaded, backend=backend, device=device, dtype=dtype, images=images,
                        input_size=(processor.size["height"], processor.size["width"]))
        if choice.folder is not None:  # the eager model is released here: the graph holds its own weights
            loaded, device = SapiensExportedModel.from_pretrained(choice.folder, int8=dtype == "int8"), "cpu"
    if report is not None:
        report(str(choice))
    return pipeline(task.pipeline, model=loaded, image_processor=processor, device=device)


def register_pipelines() -> None:
    """Registers the `sapiens-*` pipeline of every task that has one (`sapiens_hf.tasks`)."""
    for name, task in PIPELINE_TASKS.items():
        PIPELINE_REGISTRY.register_pipeline(
            name,
            pipeline_class=globals()[task.pipeline_class],
            pt_model=(getattr(transformers, task.auto_class), SapiensExportedModel),  # a model, or an export folder
            default={"model": (task.default_checkpoint, "main")},
            type="image",
        )


__all__ = [
    "SapiensDepthPipeline",
    "SapiensNormalPipeline",
    "SapiensPosePipeline",
    "SapiensSegmentationPipeline",
    "register_pipelines",
]
