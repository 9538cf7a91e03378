"""Pipelines for the Sapiens tasks, registered with transformers on `import sapiens_hf`:

    pipeline("sapiens-pose")          top-down keypoints (boxes given, found by a person detector, or the whole image)
    pipeline("sapiens-segmentation")  body-part segmentation (28 classes in Sapiens, 29 in Sapiens2)
    pipeline("sapiens-depth")         relative depth (Sapiens)
    pipeline("sapiens-normal")        surface normals
    pipeline("sapiens-pointmap")      XYZ per pixel (Sapiens2)
    pipeline("sapiens-matting")       alpha matte and foreground (Sapiens2)

Each accepts either generation's models — Sapiens checkpoints and transformers' Sapiens2 ones
(`facebook/sapiens2-*`) — and returns the same result schema for both; the model's config tells them apart
(`sapiens_hf.families`).

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
from transformers import ObjectDetectionPipeline, Pipeline, pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.base import ChunkPipeline

from . import keypoint_formats
from .backends import Choice, choose
from .exported_model import SapiensExportedModel
from .families import check_config_overrides, family_of
from .geometry import check_boxes
from .image_io import read_image
from .metadata import model_flip_pairs
from .modeling_sapiens import SapiensPoseEstimatorOutput, WrongModelError
from .runtime import is_export_folder
from .tasks import DEFAULT_DETECTOR, PIPELINE_TASKS, SEGMENTATION, Task, cut_out, get_task, task_of_class
from .validation import check_kernel_size, check_number
from .visualization import class_palette, segmentation_to_image, visualize_depth, visualize_normals


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
        processor_class = family_of(self.model.config).image_processor_class()
        if self.image_processor is None:  # a pipeline class built directly: the released checkpoints use the defaults
            self.image_processor = processor_class()
        elif not isinstance(self.image_processor, processor_class):
            # transformers' own Sapiens2 processor (where torchvision is installed) has other outputs and results:
            # the same settings in this package's processor, which gives the pipelines' schema.
            self.image_processor = processor_class.from_dict(self.image_processor.to_dict())

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
        family = family_of(self.model.config)
        saved_as = task_of_class((self.model.config.architectures or [None])[0])
        name = family.class_name(saved_as) if saved_as is not None and saved_as.has_head else class_name
        wanted = self.sapiens_task
        if class_name == name == family.class_name(wanted):
            return
        task = task_of_class(name)
        model = name if name == class_name else f"{class_name} loaded from a {name} checkpoint"
        if family.class_name(wanted) is None:
            problem = f"a {family.name} model ({model}); {family.name} has no {wanted.name} model"
        elif task is not None and task.has_head:
            problem = f'a {task.name} model ({model}); use pipeline("{task.pipeline}", ...) for it'
        elif task is not None and task.encoder_only:
            problem = f"a model without a task head ({model}); fine-tune one for the task first"
        elif task is not None:
            problem = f"a {task.name} model ({model}); fine-tune it for the task first"
        else:
            problem = f"a {model}"
        needed = " or ".join(name for name in (wanted.model_class, wanted.v2_model_class) if name)
        raise WrongModelError(f"The {wanted.pipeline} pipeline needs a {needed}, got {problem}")

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
        image, mask = (image["image"], image.get("mask")) if isinstance(image, dict) else (image, None)
        image = read_image(image, timeout, self.image_processor.max_image_pixels)
        model_inputs = self.image_processor(image, return_tensors="pt").to(self.dtype)
        model_inputs["target_size"] = image.shape[:2]
        if mask is not None:  # a NumPy array: batched as a list, whatever the images' sizes
            model_inputs["mask"] = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
            if model_inputs["mask"].shape != image.shape[:2]:
                raise ValueError(f"The mask is {model_inputs['mask'].shape[::-1]} (W, H) but the image "
                                 f"{image.shape[1::-1]}: give a mask of the image's size")
        return model_inputs

    def _forward(self, model_inputs, flip_test=False):
        pixel_values, task = model_inputs["pixel_values"], self.sapiens_task
        outputs = task.model_outputs(self.model(pixel_values=pixel_values))
        model_outputs = {"target_size": model_inputs["target_size"], **outputs}
        if "mask" in model_inputs:
            model_outputs["mask"] = model_inputs["mask"]
        if flip_test:
            flipped = task.model_outputs(self.model(pixel_values=pixel_values.flip(-1)))
            model_outputs.update({f"{name}_flipped": value for name, value in flipped.items()})
        return model_outputs

    def _outputs(self, model_outputs, suffix=""):
        task = self.sapiens_task
        return task.output_type()(**{name: model_outputs[name + suffix] for name in task.outputs})


class SapiensSegmentationPipeline(_SapiensDensePipeline):
    """Body-part segmentation. Returns `{"segmentation": (H, W) class indices, "label_map": palettised PIL image}`
    (the class names are `model.config.id2label`)."""

    def postprocess(self, model_outputs):
        segmentation = self.image_processor.post_process_semantic_segmentation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]]
        )[0]
        palette = class_palette(self.model.config.id2label)  # the model's own classes (28 or 29), named colours
        return {"segmentation": segmentation, "label_map": segmentation_to_image(segmentation, palette)}


class _ModelByName:
    """A model a pipeline loads by name for its own use (the person detector, the person mask's segmentation model):
    loaded on first use and kept, only the last name's (a server's memory does not grow with each name asked for).
    A model that cannot be loaded (offline without it in the cache, a wrong id or folder) is one `error` line: what,
    why (the first line of the failure) and what to do instead; `refusals` (a model of the wrong kind) are raised as
    they are."""

    def __init__(self, load, error: type[OSError], what: str, folder_of: str, default: str, instead: str,
                 refusals: tuple[type[Exception], ...] = ()):
        self.load, self.error, self.refusals = load, error, refusals
        self.what, self.folder_of, self.default, self.instead = what, folder_of, default, instead
        self.name, self.model = None, None

    def __call__(self, name: str, device):
        if self.name != name:
            try:
                model = self.load(name, device)
            except self.refusals:
                raise
            except Exception as error:  # noqa: BLE001  (offline, unknown id, not such a model: one message)
                reason = str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
                raise self.error(
                    f"Cannot load {self.what.format(name=name)}: {reason}. Give a local folder of {self.folder_of} "
                    f"(`hf download {self.default} --local-dir DIR` where the Hub is reachable), or {self.instead}"
                ) from error
            self.name, self.model = name, model
        return self.model


class MaskModelUnavailableError(OSError):
    """The segmentation model of the person mask cannot be loaded (offline without it in the cache, a wrong id)."""


class _SapiensMaskedPipeline(_SapiensDensePipeline):
    """Depth and normals: maps of the people, as the original demos show them. By default (`mask=True`) each image's
    person mask comes from the body-part segmentation model (`SEGMENTATION.default_checkpoint`; a model id or folder,
    or a `sapiens-segmentation` pipeline, as `mask=`): pixels of any class but the background. The map is NaN outside
    it, the picture grey, and the result carries the `mask` `(H, W)` (bool). `{"image": ..., "mask": (H, W)}` inputs
    bring their own mask (e.g. of a segmentation already run); `mask=False` gives the whole, unmasked map. The
    segmentation runs on `images_at_once` images of a list together."""

    images_at_once = 8  # images of a list read and segmented together

    def __init__(self, *args, **kwargs):
        self._mask_model = _ModelByName(
            lambda name, device: load_task_pipeline(SEGMENTATION.name, name, device=device), MaskModelUnavailableError,
            "the segmentation model {name} of the person mask", "it", SEGMENTATION.default_checkpoint,
            "mask=False for the unmasked map", refusals=(WrongModelError,))
        super().__init__(*args, **kwargs)

    def __call__(self, inputs, mask=True, **kwargs):
        several = isinstance(inputs, (list, tuple))
        single = not several and (isinstance(inputs, (str, os.PathLike, bytes, dict, np.ndarray, torch.Tensor,
                                                      PIL.Image.Image)))
        items = inputs if several else [inputs] if single else None
        if mask is False or mask is None or (items is not None and all(
                isinstance(item, dict) and item.get("mask") is not None for item in items)):
            return super().__call__(inputs, **kwargs)
        self._sanitize_parameters(**{key: value for key, value in kwargs.items()  # checked before the model loads
                                     if key not in ("batch_size", "num_workers")})
        segmenter = self._resolve_mask_model(mask)
        timeout = kwargs.get("timeout")
        if single:
            return super().__call__(self._with_masks([inputs], segmenter, timeout)[0], **kwargs)
        if items is None:  # a stream: one image at a time
            return super().__call__((self._with_masks([item], segmenter, timeout)[0] for item in inputs), **kwargs)
        results = []
        for start in range(0, len(items), self.images_at_once):
            results += super().__call__(self._with_masks(items[start : start + self.images_at_once], segmenter,
                                                         timeout), **kwargs)
        return results

    def _resolve_mask_model(self, mask):
        """The segmentation pipeline of the person masks: `mask=True` the released one, a model id or folder
        (loaded once, the last one kept), or a `sapiens-segmentation` pipeline as it is."""
        if isinstance(mask, SapiensSegmentationPipeline):
            return mask
        if mask is True:
            mask = SEGMENTATION.default_checkpoint
        if not isinstance(mask, (str, os.PathLike)):
            raise TypeError("mask must be True (the released segmentation model), a segmentation model id or folder, "
                            "a sapiens-segmentation pipeline, or False (no mask)")
        return self._mask_model(str(mask), self.device)

    def _with_masks(self, items: list, segmenter, timeout) -> list[dict]:
        """`items` as `{"image", "mask"}` dicts, the masks of those without one from one call of `segmenter`."""
        items = [item if isinstance(item, dict) else {"image": item} for item in items]
        todo = [item for item in items if item.get("mask") is None]
        images = [read_image(item["image"], timeout, self.image_processor.max_image_pixels) for item in todo]
        segmented = segmenter(images, batch_size=len(images)) if images else []
        masked = [{"image": image, "mask": SEGMENTATION.person_mask(result["segmentation"]).numpy()}
                  for image, result in zip(images, segmented)]
        return [masked.pop(0) if item.get("mask") is None else item for item in items]

    def _masked(self, result: dict, model_outputs) -> tuple[dict, torch.Tensor | None]:
        """The result cut to its person mask (the task's `mask_result`), and the mask; as it is without one."""
        if "mask" not in model_outputs:
            return result, None
        mask = torch.from_numpy(np.asarray(model_outputs["mask"]).reshape(model_outputs["target_size"]))
        return {**self.sapiens_task.mask_result(result, mask), "mask": mask}, mask


class SapiensDepthPipeline(_SapiensMaskedPipeline):
    """Relative depth (larger = farther) of the people. Returns `{"predicted_depth": (H, W) tensor, "depth":
    colour-mapped PIL image, "mask": (H, W) bool}` (NaN and grey outside the person mask; see
    `_SapiensMaskedPipeline`, `mask=False`: no mask). `flip_test=True` averages with the prediction on the mirrored
    image, as the original demo's `--flip`."""

    def postprocess(self, model_outputs):
        flipped = self._outputs(model_outputs, "_flipped") if "predicted_depth_flipped" in model_outputs else None
        depth = self.image_processor.post_process_depth_estimation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]], outputs_flipped=flipped
        )[0]["predicted_depth"]
        result, mask = self._masked({"predicted_depth": depth}, model_outputs)
        return {**result, "depth": visualize_depth(result["predicted_depth"], mask)}


class SapiensNormalPipeline(_SapiensMaskedPipeline):
    """Surface normals of the people. Returns `{"normals": (3, H, W) unit vectors, "normal_map": RGB PIL image,
    "mask": (H, W) bool}` (NaN and grey outside the person mask; `mask=False`: no mask)."""

    def postprocess(self, model_outputs):
        normals = self.image_processor.post_process_normal_estimation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]]
        )[0]["normals"]
        result, mask = self._masked({"normals": normals}, model_outputs)
        return {**result, "normal_map": visualize_normals(result["normals"], mask)}


class SapiensPointmapPipeline(_SapiensDensePipeline):
    """3D points (Sapiens2). Returns `{"pointmap": (3, H, W) XYZ per pixel in the camera frame (metres when the model
    predicts a scale), "scale": the predicted scale or None, "depth": its Z colour-mapped as a PIL image}`."""

    def postprocess(self, model_outputs):
        result = self.image_processor.post_process_pointmap_estimation(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]]
        )[0]
        return {**result, "depth": visualize_depth(result["pointmap"][2])}


class SapiensMattingPipeline(_SapiensDensePipeline):
    """Alpha matting (Sapiens2). Returns `{"alpha": (H, W) in [0, 1], "foreground": (3, H, W) pre-multiplied RGB in
    [0, 1], "cut_out": the RGBA PIL image of the person}`."""

    def postprocess(self, model_outputs):
        result = self.image_processor.post_process_image_matting(
            self._outputs(model_outputs), target_sizes=[model_outputs["target_size"]]
        )[0]
        return {**result, "cut_out": cut_out(result)}


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


class DetectorUnavailableError(OSError):
    """The person detector cannot be loaded (offline without it in the cache, a wrong id or folder)."""


class SapiensPosePipeline(_SapiensPipelineMixin, ChunkPipeline):
    """Top-down pose estimation: one crop per person box, decoded into keypoints in image coordinates.

    Boxes (COCO `[x, y, width, height]`) come from `boxes=` (per image for a list of images), from `{"image": ...,
    "boxes": [...]}` inputs (with `"box_scores"` if they come from a detector of one's own), or else from a person
    `detector`: by default `DEFAULT_DETECTOR` (RT-DETR), or a transformers object-detection pipeline, a model id or
    folder for one, or any callable returning that pipeline's output for a PIL image; `detector=None` uses the whole
    image as the box. When nobody is detected the whole image is the box, as in the original demo. Detections
    labelled `person_label` scoring above `detector_threshold` are kept after NMS (IoU 0.3, as the original demo).
    The detector runs on `images_at_once` images together for a list of images; the crops of several images go
    through the model together with `batch_size`. `flip_test=True` averages with the heatmaps of the mirrored crops
    (the released configs' test setting).

    Returns per image a list of people: `keypoints` `(K, 2)`, `scores` `(K,)`, `labels` (keypoint indices),
    `bbox_xywh` (the box, as the `boxes` given or detected: x, y, width, height) and `bbox_score` (the detector's
    score, `None` for given boxes and the whole image). Keypoint names: `model.config.id2label`. `keypoint_format=`
    ("coco", "coco-wholebody", "openpose"; `sapiens_hf.keypoint_formats`) gives the keypoints in that format instead
    (by keypoint name; points the model lacks are NaN with score 0), and each person's `keypoint_format` names it.
    """

    crops_at_once = 8  # person crops made at a time (a 1024×768 crop is 19 MB): memory stays bounded per image
    images_at_once = 8  # images of a list read and passed to the detector together

    def __init__(self, *args, **kwargs):
        self._detector = _ModelByName(
            lambda name, device: pipeline("object-detection", model=name, device=device), DetectorUnavailableError,
            "the person detector {name}", "an object-detection model", DEFAULT_DETECTOR,
            "detector=None for the whole image as the person's box")
        super().__init__(*args, **kwargs)

    def __call__(self, inputs, boxes=None, detector=DEFAULT_DETECTOR, **kwargs):
        if boxes is not None:
            if isinstance(inputs, (list, tuple)):
                if len(boxes) != len(inputs):
                    raise ValueError(f"Got boxes for {len(boxes)} images but {len(inputs)} images")
                inputs = [{"image": image, "boxes": image_boxes} for image, image_boxes in zip(inputs, boxes)]
            else:
                inputs = {"image": inputs, "boxes": boxes}
        # Malformed boxes fail before any image is processed (whether they overlap their image is checked with it).
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for item in items:
            if isinstance(item, dict):
                check_boxes(item.get("boxes"))
        self._sanitize_parameters(**{key: value for key, value in kwargs.items()  # checked before the detector loads
                                     if key not in ("batch_size", "num_workers")})
        without_boxes = [item for item in items if not (isinstance(item, dict) and item.get("boxes") is not None)]
        # The detector loads (or fails, once) before any image is read, and only when some image needs it.
        if detector is not None and without_boxes:
            detector = self._resolve_detector(detector, kwargs.get("person_label", "person"))
        else:
            detector = None
        if detector is None or not isinstance(inputs, (list, tuple)):  # one image, or a stream: detected one by one
            return super().__call__(inputs, detector=detector, **kwargs)
        results = []
        for start in range(0, len(items), self.images_at_once):  # detection batched, memory bounded
            group = self._detected(items[start : start + self.images_at_once], detector, kwargs)
            results += super().__call__(group, detector=None, **kwargs)
        return results

    def _detected(self, items: list, detector, kwargs: dict) -> list[dict]:
        """`items` as `{"image", "boxes", "box_scores"}` dicts, the person boxes of those without boxes found by one
        call of the detector."""
        timeout = kwargs.get("timeout")
        threshold = check_number(kwargs.get("detector_threshold", 0.3), "detector_threshold", unit=True)
        items = [item if isinstance(item, dict) else {"image": item} for item in items]
        todo = [item for item in items if item.get("boxes") is None]
        images = [read_image(item["image"], timeout, self.image_processor.max_image_pixels) for item in todo]
        found = self.detect_people(images, detector, threshold, kwargs.get("person_label", "person"))
        detected = [{"image": image, "boxes": boxes, "box_scores": scores} for image, (boxes, scores)
                    in zip(images, found)]
        return [detected.pop(0) if item.get("boxes") is None else item for item in items]

    def _sanitize_parameters(
        self,
        timeout=None,
        detector=None,
        detector_threshold=None,
        person_label=None,
        flip_test=None,
        kernel_size=None,
        threshold=None,
        keypoint_format=None,
    ):
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if keypoint_format is not None:  # refused here, before any image is read
            postprocess_params["conversion"] = self.keypoint_conversion(keypoint_format)
        if timeout is not None:
            preprocess_params["timeout"] = timeout
        preprocess_params["detector"] = detector  # resolved by __call__; None: boxes given, or the whole image
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

    def keypoint_conversion(self, keypoint_format: str):
        """The `keypoint_formats.Conversion` from this model's keypoints (by their names, `config.id2label`) to
        `keypoint_format`; None for "native". A `KeypointFormatError` for a format the model's keypoints cannot
        give."""
        config = self.model.config
        names = [config.id2label[index] for index in range(config.num_labels)]
        return keypoint_formats.conversion(names, keypoint_format)

    def _resolve_detector(self, detector, person_label: str = "person"):
        """An object-detection pipeline for a model id or folder (the last one kept), a callable as it is. A pipeline
        whose model has no `person_label` label is refused: it would find nobody, and every image would silently be
        one whole-image person."""
        if not isinstance(detector, (str, os.PathLike)):
            if not callable(detector):
                raise TypeError("detector must be an object-detection pipeline, a model id or folder, a callable or "
                                "None (the whole image)")
            return self._check_person_label(detector, person_label)
        return self._check_person_label(self._detector(str(detector), self.device), person_label)

    @staticmethod
    def _check_person_label(detector, person_label: str):
        labels = getattr(getattr(getattr(detector, "model", None), "config", None), "id2label", None) or {}
        if labels and person_label.lower() not in {str(label).lower() for label in labels.values()}:
            shown = ", ".join(map(str, list(labels.values())[:8])) + (", ..." if len(labels) > 8 else "")
            raise ValueError(f"The person detector has no {person_label!r} label (its labels: {shown}): give a "
                             "detector of people, or person_label= its label for people")
        return detector

    def detect_people(self, images: list[np.ndarray], detector, threshold: float = 0.3,
                      person_label: str = "person") -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image, the person boxes `(n, 4)` (x, y, width, height) and their scores, best first: a transformers
        pipeline gets the images in one call, another callable one image at a time."""
        pictures = [PIL.Image.fromarray(image) for image in images]
        if isinstance(detector, ObjectDetectionPipeline):
            found = self._detect_together(detector, pictures, threshold)
        elif isinstance(detector, Pipeline):
            found = [detector(picture, threshold=threshold) for picture in pictures]
        else:
            found = [detector(picture) for picture in pictures]
        return [self._people(detections, threshold, person_label) for detections in found]

    @staticmethod
    def _detect_together(detector, pictures: list, threshold: float) -> list[list[dict]]:
        """The object-detection pipeline's output for each picture, from one forward pass of its model on all of
        them. (The pipeline's own `batch_size` cannot be used: it splits every model output along the batch, and
        RT-DETR's `encoder_last_hidden_state` is a list of feature levels, so batches of more than 3 images fail.)
        Its steps, as the pipeline's: processor, model, `post_process_object_detection`, integer box corners."""
        inputs = detector.image_processor(images=pictures, return_tensors="pt").to(detector.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(detector.dtype)
        with torch.inference_mode():
            outputs = detector.model(**inputs)
        sizes = torch.tensor([[picture.height, picture.width] for picture in pictures])
        results = detector.image_processor.post_process_object_detection(outputs, threshold, sizes)
        labels = detector.model.config.id2label
        return [[{"score": score.item(), "label": labels[label.item()],
                  "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box.int().tolist()))}
                 for score, label, box in zip(result["scores"], result["labels"], result["boxes"])]
                for result in results]

    @staticmethod
    def _people(detections: list[dict], threshold: float, person_label: str) -> tuple[np.ndarray, np.ndarray]:
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
        box_scores = inputs.get("box_scores") if isinstance(inputs, dict) else None
        image = read_image(image, timeout, self.image_processor.max_image_pixels)
        height, width = image.shape[:2]
        if boxes is None and detector is not None:
            boxes, box_scores = self.detect_people([image], detector, detector_threshold, person_label)[0]
        boxes = check_boxes(boxes, height, width)
        if box_scores is None or len(box_scores) != len(boxes):  # given boxes, or nobody found: the whole image
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
            # As a tensor: Sapiens2's `flip_back` takes no list.
            pairs = torch.as_tensor(flip_pairs, dtype=torch.long, device=pixel_values.device)
            flipped = self.model(pixel_values=pixel_values.flip(-1), flip_pairs=pairs)
        people = self.image_processor.post_process_pose_estimation(
            SapiensPoseEstimatorOutput(heatmaps=outputs.heatmaps), boxes=[model_inputs["box"].tolist()],
            outputs_flipped=flipped, kernel_size=kernel_size, crop_center=model_inputs["crop_center"],
            crop_scale=model_inputs["crop_scale"],
        )[0]
        return {"keypoints": torch.stack([person["keypoints"] for person in people]),
                "scores": torch.stack([person["scores"] for person in people]),
                "box": model_inputs["box"], "box_score": model_inputs["box_score"], "is_last": model_inputs["is_last"]}

    def postprocess(self, all_outputs, threshold=None, conversion=None):
        people = []
        for output in all_outputs:
            person = {"keypoints": output["keypoints"][0], "scores": output["scores"][0],
                      "labels": torch.arange(output["keypoints"].shape[1]), "bbox_xywh": output["box"][0].float()}
            if conversion is not None:  # another keypoint format: missing points NaN, score 0
                person = conversion.person(person)
            if threshold is not None:  # as post_process_pose_estimation(threshold=)
                keep = person["scores"] > threshold
                person.update({key: person[key][keep] for key in ("keypoints", "scores", "labels")})
            people.append({**person, "bbox_score": output["box_score"]})
        return people


def load_task_pipeline(task: str, model: str | None = None, *, device=None, dtype=None, backend: str = "torch",
                       images: int | None = None, report=None, **config_overrides):
    """The `sapiens-*` pipeline of `task` for a model id or path (`from_pretrained` takes it; default: the task's
    released checkpoint), with its processor (the released settings when the checkpoint has none). The model is
    loaded through the task's class of its generation (Sapiens or Sapiens2, from its config) in `dtype` (default
    float32), a folder of `sapiens-hf export` as
    `SapiensExportedModel` (default: the dtype it was exported in), and the pipeline refuses a model of another task
    (`WrongModelError`) before any prediction. Used by `sapiens-hf predict`, `annotate` and the demo.

    `backend` is "torch" (the eager model), "onnxruntime" (its ONNX export, made once into the cache and checked) or
    "auto" (the faster on this machine for a run of `images` images, None: no known end; see
    `sapiens_hf.backends`); `dtype="int8"` runs the statically quantised ONNX graph. An export folder runs as it was
    exported, whatever the backend. `report`, if given, is called with one line saying which backend runs and why."""
    from transformers import AutoConfig, AutoImageProcessor

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
        config = AutoConfig.from_pretrained(model)
        family, saved_as = family_of(config), task_of_class((config.architectures or [None])[0])
        try:  # a field of the other generation's config, before any weights load
            check_config_overrides(config_overrides, family)
        except TypeError as error:
            raise ValueError(f"{model}: {error}") from None
        if saved_as is not None and saved_as.has_head and saved_as is not task:
            needed = family.class_name(task) or f"{task.name} model"
            raise WrongModelError(f"The {task.pipeline} pipeline needs a {needed}, got a {saved_as.name} "
                                  f"model ({family.class_name(saved_as)}); use pipeline(\"{saved_as.pipeline}\", ...) "
                                  "for it")
        try:
            model_class = family.model_class(task)
        except ValueError as error:
            raise WrongModelError(f"The {task.pipeline} pipeline cannot run {model}: {error}") from None
        weights = torch.float32 if dtype in (None, "int8") else dtype
        loaded = model_class.from_pretrained(model, dtype=weights, **config_overrides)
    try:
        processor = AutoImageProcessor.from_pretrained(model, backend="pil")
    except (OSError, ValueError):  # a folder saved without its processor: the released settings
        processor = family_of(loaded.config).image_processor_class()()
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
    "DEFAULT_DETECTOR",
    "DetectorUnavailableError",
    "MaskModelUnavailableError",
    "SapiensDepthPipeline",
    "SapiensMattingPipeline",
    "SapiensNormalPipeline",
    "SapiensPointmapPipeline",
    "SapiensPosePipeline",
    "SapiensSegmentationPipeline",
    "register_pipelines",
]
