from setuptools import find_packages, setup


setup(
    name="sapiens-hf",
    version="0.1.0",
    description="Meta's Sapiens human-vision foundation models (pose, body-part segmentation, depth, normals, MAE) "
    "as native Hugging Face transformers models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0 (code); model weights CC-BY-NC-4.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"sapiens_hf": ["data/*.jpg", "data/*.md", "metrics/*/*.py"]},
    python_requires=">=3.10",
    install_requires=[
        # Any torch the CPU build 2.13.0 satisfies; no upper pin so GPU users keep their own CUDA build.
        "torch>=2.4",
        # Pinned to the tested minor range: the package relies on internals of both (transformers' core_model_loading,
        # conversion_mapping, output_capturing, the image processors' _prepare_images_structure, private Trainer
        # attributes; huggingface_hub.dataclasses.strict, the httpx client of huggingface_hub.utils). Admit a release
        # by raising the upper bound and running the README's test command (see README.md).
        "transformers>=5.23,<5.25",
        "huggingface-hub>=1.31,<2.5",
        "safetensors>=0.4",
        "accelerate>=1.0",
        "datasets>=3.0",
        "pyarrow>=15",  # the Parquet shards of `sapiens-hf annotate` (also a dependency of datasets)
        "evaluate>=0.4.6",
        "pillow>=10",
        "numpy>=1.24",
        # The original's exact warps and resizes (uint8 bilinear affine crops, INTER_LINEAR resizes).
        "opencv-python-headless>=4.8",
        "tqdm",
        # Videos: H.264 visualisations that browsers play (PyAV's wheels bundle FFmpeg with libx264), and people
        # followed across frames with ByteTrack; supervision's 0.30 line is the last with ByteTrack and the first
        # without a GUI OpenCV requirement (which would install a second cv2 over opencv-python-headless).
        "av>=14.2",
        "supervision>=0.30,<0.31",
        # --smooth: the One Euro filter by its authors (Casiez, Roussel), a few lines of pure Python
        "OneEuroFilter>=0.2.1",
        # The pointmap task's point clouds (PLY): a small, maintained pure-Python reader/writer over NumPy that writes
        # binary PLY headers and typed vertex records correctly, rather than a hand-rolled header.
        "plyfile>=1.0",
    ],
    extras_require={
        # scipy: the pose augmentation's truncated-normal jitter (training/pose_data.py)
        "train": ["deepspeed>=0.16", "pycocotools>=2.0.7", "albumentations>=2.0", "scipy>=1.10"],
        "test": [
            "pytest>=8", "scikit-image>=0.22", "pycocotools>=2.0.7", "deepspeed>=0.16", "albumentations>=2.0",
            "scipy>=1.10", "gradio>=5", "playwright>=1.40", "onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.27",
            "pytest-xdist>=3.5",  # the test command's `-n 2`: many tests wait on subprocesses, a second worker fills in
            "ruff>=0.6",  # the linter CI runs (configuration in pyproject.toml)
        ],
        # timm is the peer in benchmarks/; on a CPU-only torch install it with `pip install --no-deps timm`.
        "bench": ["timm>=1.0"],
        # `sapiens-hf export`: ONNX graphs (torch.onnx's dynamo exporter) run with onnxruntime (docs/deployment.md);
        # 1.27 is the first whose quantize_static takes ranges measured elsewhere (calibration_cache_path: int8)
        "export": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.27"],
        # `sapiens-hf evaluate --task pose`: COCO keypoint AP is pycocotools' COCOeval (docs/metrics.md)
        "eval": ["pycocotools>=2.0.7"],
        # `sapiens-hf demo`, the web app (docs/demo.md)
        "demo": ["gradio>=5"],
        "dev": [
            "pytest>=8", "scikit-image>=0.22", "pycocotools>=2.0.7", "deepspeed>=0.16", "albumentations>=2.0",
            "scipy>=1.10", "ruff",
        ],
    },
    entry_points={"console_scripts": ["sapiens-hf=sapiens_hf.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Image Recognition"],
)
