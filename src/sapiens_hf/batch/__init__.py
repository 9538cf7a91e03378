"""Batch inference, one engine for `sapiens-hf predict` (per-image files) and `sapiens-hf annotate` (Parquet shards,
across processes with `accelerate launch -m sapiens_hf.cli annotate …`): `inputs` what is read, `engine` the loop
from inputs through batches and models to writers, `writers` the outputs and the record of a run that the same
command resumes (docs/inference.md)."""
