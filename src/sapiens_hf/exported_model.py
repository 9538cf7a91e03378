"""An export folder (`sapiens-hf export`) as the model of a `sapiens-*` pipeline, so that the pipelines, `predict`,
`annotate` and the demo run the exported graph with the same pre- and post-processing:

    pose = pipeline("sapiens-pose", model="out/pose-onnx")                # model.onnx, with onnxruntime
    pose = pipeline("sapiens-pose", model="out/pose-onnx", model_kwargs={"int8": True})  # model.int8.onnx
    depth = pipeline("sapiens-depth", model="out/depth-pt2", trust_remote_code=True)     # a torch.export program

`SapiensExportedModel` has what the pipelines use of a model: `config` (the exported model's, saved beside the graph:
a `SapiensConfig` or a Sapiens2 `Sapiens2Config`, whose generation picks the pipeline's image processor),
`name_or_path`, `device`, `dtype` and `forward(pixel_values)` returning the task model's output class. A graph
exported without `--dynamic-batch` runs one image at a time. It runs on the CPU; to run an ONNX graph elsewhere, give
onnxruntime's providers to `sapiens_hf.runtime.ExportedModel`, which needs neither torch nor transformers.
"""

from pathlib import Path

import torch
from torch import nn

from .families import SAPIENS, family_of
from .modeling_sapiens import WrongModelError, flip_back
from .runtime import DTYPES, ExportedModel, is_export_folder, pipeline_export_problem, read_manifest
from .tasks import TASKS


# What `pipeline()` passes to every model class it tries: Hub options, which do not change how a local folder loads.
_PIPELINE_KWARGS = {"_from_pipeline", "revision", "token", "_commit_hash", "code_revision", "local_files_only",
                    "cache_dir", "force_download", "proxies"}


class SapiensExportedModel(nn.Module):
    """The graph of an export folder (`sapiens_hf.runtime.ExportedModel`, which also makes the int8 and trust checks)
    behind a task model's interface (see the module docstring). `dtype`, if given, must be the export's own: the graph
    was traced in it."""

    input_modalities = "image"

    def __init__(self, folder: str | Path, int8: bool = False, trust_remote_code: bool = False, dtype=None):
        super().__init__()
        folder = Path(folder)
        problem = pipeline_export_problem(folder)  # before the manifest, which an older export may lack fields of
        if problem:
            raise WrongModelError(problem)
        try:
            self.manifest = read_manifest(folder)
        except ValueError as error:  # an export folder, damaged: said as it is (an OSError: not an export folder)
            raise WrongModelError(str(error)) from None
        self.task = TASKS[self.manifest["task"]]
        if not self.task.has_head:
            raise WrongModelError(f"{folder} holds an export of a {self.task.name} model, which no pipeline takes; run it "
                             "with sapiens_hf.runtime.ExportedModel")
        if isinstance(dtype, str) and dtype != "auto":
            dtype = getattr(torch, dtype, dtype)
        if dtype not in (None, "auto", self.dtype):
            raise WrongModelError(f"{folder} was exported in {self.manifest['dtype']}; export it again with --dtype for "
                             f"{dtype}")
        try:  # as many threads as torch's (one per core, or what OMP_NUM_THREADS, `accelerate launch` or
            # torch.set_num_threads set), so that several processes on one machine share its cores alike with either
            self.runner = ExportedModel(folder, int8=int8, trust_remote_code=trust_remote_code,
                                        threads=torch.get_num_threads())
        except ValueError as error:  # no int8 graph, an untrusted program, a damaged folder: said as it is
            raise WrongModelError(str(error)) from None
        from transformers import AutoConfig

        self.config = AutoConfig.from_pretrained(folder)  # the Sapiens or Sapiens2 config, by its model_type
        exported = self.manifest.get("family", SAPIENS.name)
        if family_of(self.config).name != exported:  # the config picks the processor: the graph's would be wrong
            raise WrongModelError(f"{folder} holds a {exported} graph beside a {family_of(self.config).name} "
                                  "config.json (edited or copied in): export the model again")
        self.config.name_or_path = str(folder)
        self.exported_from = self.manifest["model"]["class"]  # what the pipelines check the task by

    @classmethod
    def from_pretrained(cls, folder, *, device_map=None, **kwargs):
        """Loads an export folder (keyword arguments as `__init__`); OSError for anything else."""
        if not is_export_folder(folder):  # an OSError, so that `pipeline()` goes on to its other model classes
            raise OSError(f"{folder} is not a folder written by sapiens-hf export")
        if device_map not in (None, "cpu"):
            raise ValueError(f"An exported model runs on the CPU, not device_map={device_map!r}")
        own = {key: kwargs.pop(key) for key in ("int8", "trust_remote_code", "dtype") if key in kwargs}
        unknown = sorted(key for key, value in kwargs.items() if key not in _PIPELINE_KWARGS and value is not None)
        if unknown:
            raise TypeError(f"An exported model does not take {unknown}")
        return cls(folder, **own)

    def can_generate(self) -> bool:
        return False

    def save_pretrained(self, *args, **kwargs):
        raise TypeError(f"An exported model is saved already: copy {self.name_or_path}, or export the model again")

    @property
    def name_or_path(self) -> str:
        return self.config.name_or_path

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, DTYPES[self.manifest["dtype"]])

    def to(self, *args, **kwargs):
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"An exported model runs on the CPU, not {device}: pass device='cpu' (--device cpu on the "
                             "command line; for onnxruntime's other providers use "
                             "sapiens_hf.runtime.ExportedModel(folder, providers=[...]))")
        if dtype is not None and dtype != self.dtype:
            raise ValueError(f"This model was exported in {self.manifest['dtype']}; export it again in {dtype}")
        return self

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, flip_pairs=None):
        """The task model's outputs for `pixel_values` (`flip_pairs`: pose crops that are mirrored, as the model's)."""
        if pixel_values.dtype != self.dtype:
            raise ValueError(f"pixel_values are {pixel_values.dtype}; this model was exported in {self.dtype}")
        if flip_pairs is not None and not self.task.top_down:
            raise TypeError(f"flip_pairs apply to pose; this is a {self.task.name} model")
        # The runner takes float32 NumPy arrays (bfloat16 has no NumPy dtype); both casts are exact.
        outputs = {name: torch.from_numpy(value).to(self.dtype)
                   for name, value in self.runner.run_outputs(pixel_values.cpu().float().numpy()).items()}
        if flip_pairs is not None:  # both generations' heatmaps are flipped back alike (mirror W, swap pairs)
            outputs[self.task.output] = flip_back(outputs[self.task.output], flip_pairs)
        return self.task.output_type()(**outputs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_or_path!r}, {self.exported_from}, {self.manifest['format']})"


__all__ = ["SapiensExportedModel"]
