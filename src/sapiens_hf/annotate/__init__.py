"""Dataset-scale inference: `sapiens-hf annotate` labels a folder tree, a list of files or a `datasets` dataset with
any of the four tasks in one pass, into Parquet shards that `datasets.load_dataset("parquet", data_dir=OUT)` reads.
Run it as is, or across processes, GPUs and nodes with `accelerate launch -m sapiens_hf.cli annotate …`; any number
of processes, and a run resumed after a kill, give the same shards (docs/inference.md, "Millions of images").

`sources` holds what is read and how it is cut into chunks, `output` the output folder, `run` the loop."""

from .output import OutputFolder
from .run import annotate
from .sources import DatasetSource, FileSource, read_list_file


__all__ = ["DatasetSource", "FileSource", "OutputFolder", "annotate", "read_list_file"]
