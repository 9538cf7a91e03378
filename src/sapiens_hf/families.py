"""The two model generations behind one interface: Sapiens (this package's models, `model_type` "sapiens") and
Sapiens2 (transformers' own `models/sapiens2`, `model_type` "sapiens2", loaded by the stock `from_pretrained` with no
conversion). A model's config decides which one it is — nothing asks the user; everything else (pipelines, predict,
annotate, the demo) reads the `Family` it gets here.
"""

from dataclasses import dataclass

from .tasks import Task


@dataclass(frozen=True)
class Family:
    """One generation: its name, its configs' `model_type`, and where its task classes and image processor live."""

    name: str
    model_type: str

    @property
    def generation(self) -> int:
        return 2 if self is SAPIENS2 else 1

    def class_name(self, task: Task) -> str | None:
        """The model class of `task` in this generation (None where the generation lacks the task)."""
        return task.v2_model_class if self is SAPIENS2 else task.model_class

    def model_class(self, task: Task) -> type:
        """The model class of `task` in this generation; a ValueError naming the generation that has it, if this one
        does not."""
        name = self.class_name(task)
        if name is None:
            other = SAPIENS if self is SAPIENS2 else SAPIENS2
            raise ValueError(f"{self.name} has no {task.name} model; the {task.name} task needs a {other.name} model "
                             f"(e.g. {task.default_checkpoint})")
        if self is SAPIENS2:
            import transformers

            return getattr(transformers, name)
        from . import modeling_sapiens

        return getattr(modeling_sapiens, name)

    def image_processor_class(self) -> type:
        """The image processor of this generation's checkpoints (torchvision-free for both)."""
        if self is SAPIENS2:
            from .image_processing_sapiens2 import Sapiens2ImageProcessorPil

            return Sapiens2ImageProcessorPil
        from .image_processing_sapiens import SapiensImageProcessorPil

        return SapiensImageProcessorPil


    def config_fields(self) -> set[str]:
        """The names a config override may set on this generation's configs: the config's fields and the init-only
        arguments transformers' configs understand."""
        from dataclasses import fields

        if self is SAPIENS2:
            from transformers import Sapiens2Config as config_class
        else:
            from .configuration_sapiens import SapiensConfig as config_class
        return {field.name for field in fields(config_class)} | {"attn_implementation", "num_labels",
                                                                 "out_features", "out_indices"}


def check_config_overrides(overrides, family: Family | None = None) -> None:
    """A TypeError for an override key that is no config field of `family` (of either generation when the model is not
    known yet): a misspelt key would otherwise be stored on the config as an unused attribute."""
    import difflib

    known = family.config_fields() if family else SAPIENS.config_fields() | SAPIENS2.config_fields()
    for key in overrides:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            owner = f"{family.name} config" if family else "Sapiens or Sapiens2 config"
            hint = f"; did you mean {close[0]!r}?" if close else f" (overrides are {owner} fields)"
            raise TypeError(f"Unknown config override {key!r}{hint}")


SAPIENS = Family("Sapiens", "sapiens")
SAPIENS2 = Family("Sapiens2", "sapiens2")


def family_of(config) -> Family:
    """The generation of a model config (or a config dict): Sapiens2 for `model_type` "sapiens2", else Sapiens."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return SAPIENS2 if model_type == SAPIENS2.model_type else SAPIENS


__all__ = ["SAPIENS", "SAPIENS2", "Family", "check_config_overrides", "family_of"]
