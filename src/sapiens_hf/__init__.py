"""Sapiens (v1) human-vision foundation models as native Hugging Face transformers models.

`import sapiens_hf` registers the config, models, image processor and pipelines with transformers' Auto classes (and
lets them resolve Meta's original releases, see `sapiens_hf.releases`), so that `AutoModel`, `AutoImageProcessor` and
`pipeline("sapiens-depth", ...)` find them.

Importing this package is cheap: the public names below load on first use, and the registration, which needs
transformers and torch, runs when transformers is there to register with: at once if transformers is already
imported, otherwise right after transformers is first imported (by you, or by the first Sapiens class you use). So
`import sapiens_hf` then `from transformers import pipeline` works as always, while the `sapiens-hf` command line
parses its arguments and prints `--help` without importing torch or transformers at all.
"""

import importlib
import sys
import threading


__version__ = "0.1.0"

# Public name -> the submodule that defines it (loaded on first access).
_LAZY_NAMES = {
    "convert_original_checkpoint": "convert",
    "SAPIENS_PRESETS": "configuration_sapiens",
    "SapiensConfig": "configuration_sapiens",
    "SapiensPreTrainedModel": "modeling_sapiens",
    "SapiensModel": "modeling_sapiens",
    "SapiensBackbone": "modeling_sapiens",
    "SapiensForPoseEstimation": "modeling_sapiens",
    "SapiensForSemanticSegmentation": "modeling_sapiens",
    "SapiensForDepthEstimation": "modeling_sapiens",
    "SapiensForNormalEstimation": "modeling_sapiens",
    "SapiensForMaskedImageModeling": "modeling_sapiens",
    "SapiensImageProcessorPil": "image_processing_sapiens",
    "SapiensPosePipeline": "pipelines",
    "SapiensSegmentationPipeline": "pipelines",
    "SapiensDepthPipeline": "pipelines",
    "SapiensNormalPipeline": "pipelines",
    "register_pipelines": "pipelines",
}
# Submodules reachable as attributes without importing them first (`sapiens_hf.convert.TASK_TO_CLASS`).
_SUBMODULES = (
    "configuration_sapiens",
    "convert",
    "hub",
    "image_processing_sapiens",
    "metadata",
    "modeling_sapiens",
    "pipelines",
    "releases",
    "tasks",
    "visualization",
)

__all__ = [name for name in _LAZY_NAMES if name != "register_pipelines"]


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
        _register_if_ready()  # normally done already, by the hook below, when the submodule imported transformers
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | set(_SUBMODULES))


# ---------------------------------------------------------------------------------------------------------------
# Registration with transformers
# ---------------------------------------------------------------------------------------------------------------

_registered = False
_registering = threading.RLock()


def _register() -> None:
    """Registers the config, every task's model class with its Auto classes, the image processor and the pipelines
    with transformers (idempotent: `register(..., exist_ok=True)`), and lets `from_pretrained` resolve Meta's
    original releases (`sapiens_hf.releases.install_hooks`)."""
    import transformers
    from transformers import AutoConfig, AutoImageProcessor
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from . import modeling_sapiens
    from .configuration_sapiens import SapiensConfig
    from .image_processing_sapiens import SapiensImageProcessorPil
    from .pipelines import register_pipelines
    from .releases import install_hooks
    from .tasks import TASKS

    model_type = SapiensConfig.model_type
    if model_type in CONFIG_MAPPING and CONFIG_MAPPING[model_type] is not SapiensConfig:
        raise ImportError(
            f"transformers {transformers.__version__} already defines a model type {model_type!r} "
            f"({CONFIG_MAPPING[model_type].__module__}), which clashes with sapiens_hf. Install a transformers "
            "version this package supports (see setup.py) or a sapiens_hf release that handles it."
        )
    AutoConfig.register(model_type, SapiensConfig, exist_ok=True)
    for task in TASKS.values():
        for auto_class in (task.auto_class, *task.extra_auto_classes):
            getattr(transformers, auto_class).register(SapiensConfig, getattr(modeling_sapiens, task.model_class),
                                                       exist_ok=True)
    AutoImageProcessor.register(SapiensConfig, image_processor_classes={"pil": SapiensImageProcessorPil}, exist_ok=True)
    register_pipelines()
    install_hooks()


def _initializing(module) -> bool:
    return getattr(getattr(module, "__spec__", None), "_initializing", False)


def _register_if_ready(just_imported: str | None = None) -> None:
    """Registers once transformers is imported and none of this package's modules is half-way through its own import
    (registering imports them all); `just_imported` has finished executing though its import is not yet over."""
    global _registered
    if _registered:
        return
    transformers = sys.modules.get("transformers")
    if transformers is None or (just_imported != "transformers" and _initializing(transformers)):
        return
    for name, module in list(sys.modules.items()):
        if name != just_imported and name.startswith(f"{__name__}.") and _initializing(module):
            return  # its end calls this again
    # Not blocking: another thread that holds the lock imports modules whose import locks this thread may hold.
    if not _registering.acquire(blocking=False):
        return
    try:
        if not _registered:
            _registered = True  # set first: registering imports modules whose hooks call this function again
            try:
                _register()
            except BaseException:
                _registered = False
                raise
            _remove_import_hook()
    finally:
        _registering.release()


class _RegisterAfterImport:
    """A `sys.meta_path` finder, installed until the registration has run, that changes nothing in what is imported
    or how: for transformers and this package's modules, it hands back the spec the other finders give, with a loader
    that calls `_register_if_ready` once the module has executed (the original loader is put back first)."""

    _sapiens_hf_hook = True

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers" and not fullname.startswith(f"{__name__}."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader:
    def __init__(self, loader):
        self.loader = loader

    def __getattr__(self, name):
        if name == "loader":  # not set yet (a copy): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader  # the module never sees this wrapper
        self.loader.exec_module(module)
        _register_if_ready(just_imported=module.__spec__.name)


def _remove_import_hook() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not getattr(finder, "_sapiens_hf_hook", False)]


_remove_import_hook()  # a reload must not leave a second hook
sys.meta_path.insert(0, _RegisterAfterImport())
_register_if_ready()  # at once if transformers is already imported (which also removes the hook)
