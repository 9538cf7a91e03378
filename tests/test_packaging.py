"""setup.py declares every third-party module the package imports: a module that is only installed here as some
other package's dependency (scipy came with scikit-image) must not be what makes the code work. The package's modules
form no import cycle, and `import sapiens_hf` registers everything with transformers."""

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

from sapiens_hf.tasks import V1_TASKS


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sapiens_hf"


def imported_top_level_modules(folder: Path) -> dict[str, list[str]]:
    """Top-level third-party module -> the files importing it (anywhere in the file, inside functions too)."""
    found: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "sapiens_hf":
                    found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def declared_requirements() -> set[str]:
    """Normalised distribution names of install_requires and every extra in setup.py."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    setup_call = next(
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "setup"
    )
    keywords = {keyword.arg: ast.literal_eval(keyword.value) for keyword in setup_call.keywords
                if keyword.arg in ("install_requires", "extras_require")}
    requirements = list(keywords.get("install_requires", []))
    for extra in keywords.get("extras_require", {}).values():
        requirements += extra
    return {normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)[1]) for requirement in requirements}


def normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()  # PEP 503


def test_every_imported_third_party_module_is_declared_in_setup_py():
    distributions_of = importlib.metadata.packages_distributions()  # e.g. cv2 -> opencv-python-headless
    declared = declared_requirements()
    undeclared = []
    for module, files in sorted(imported_top_level_modules(PACKAGE).items()):
        # a module not installed here: assume the distribution of the same name
        distributions = {normalise(name) for name in distributions_of.get(module, [module])}
        if not distributions & declared:
            undeclared.append(f"{module} ({'/'.join(sorted(distributions))}), imported by {sorted(set(files))}")
    assert not undeclared, f"imported but declared in neither install_requires nor an extra of setup.py: {undeclared}"


def test_the_import_scan_sees_imports_inside_functions():
    modules = imported_top_level_modules(PACKAGE)
    assert "torch" in modules and "transformers" in modules
    assert "pycocotools" in modules  # only imported inside a function (metrics/functional.py)
    assert "os" not in modules and "sapiens_hf" not in modules


def package_imports(path: Path) -> set[str]:
    """The sibling modules a file of the package imports (relative or `sapiens_hf.x`, inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            folder = path.parent.relative_to(PACKAGE).parts
            base = folder[: len(folder) - node.level + 1]
            if node.module:
                found.add(".".join((*base, node.module)))
            else:
                found |= {".".join((*base, alias.name)) for alias in node.names}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
            found |= {name.removeprefix("sapiens_hf.") for name in names if name and name.startswith("sapiens_hf.")}
    return {name.split(".")[0] for name in found}


def test_model_files_import_only_torch_transformers_and_the_config():
    """The model, config and image-processor files (with the modules it imports) stand alone, as transformers'
    remote code copies them, and importing the model file does not reach the Hub code (no import cycle through it)."""
    assert package_imports(PACKAGE / "modeling_sapiens.py") == {"configuration_sapiens"}
    assert package_imports(PACKAGE / "configuration_sapiens.py") == set()
    # copied along as remote code
    assert package_imports(PACKAGE / "image_processing_sapiens.py") == {"geometry", "image_io", "validation"}
    for module in ("geometry", "image_io", "validation"):
        assert package_imports(PACKAGE / f"{module}.py") == set()
    third_party = {top for top, files in imported_top_level_modules(PACKAGE).items()
                   if "src/sapiens_hf/modeling_sapiens.py" in files}
    assert third_party <= {"torch", "transformers"}
    code = "import sys, sapiens_hf.modeling_sapiens; print('sapiens_hf.hub' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def names_from_the_package_root(path: Path) -> set[str]:
    """The names a file of the package imports from `sapiens_hf` itself that are not its modules (`from . import
    __version__` in a top-level module, `from sapiens_hf import SapiensConfig`)."""
    modules = {child.name.removesuffix(".py") for child in PACKAGE.iterdir()}
    depth = len(path.parent.relative_to(PACKAGE).parts) + 1
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module == "sapiens_hf" or not node.module and node.level == depth):
            found |= {alias.name for alias in node.names} - modules
    return found


def test_no_import_cycles_between_the_package_modules():
    """`__init__` imports the modules it exports, so they must not import names of `__init__`; only `__version__`,
    which `__init__` defines before its imports."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        module = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if module != "__init__":
            graph.setdefault(module, set()).update(package_imports(path) - {module, "__init__"})
            assert names_from_the_package_root(path) <= {"__version__"}, path
    init = list(ast.walk(ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))))
    first_import = min(node.lineno for node in init if isinstance(node, ast.ImportFrom) and node.level)
    assert any(isinstance(node, ast.Assign) and node.targets[0].id == "__version__" and node.lineno < first_import
               for node in init)

    def reaches(start, target, seen=()):
        return any(nxt == target or (nxt not in seen and reaches(nxt, target, (*seen, nxt)))
                   for nxt in graph.get(start, ()))

    cycles = sorted(module for module in graph if reaches(module, module))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_importing_sapiens_hf_registers_everything():
    """In a fresh process: `import sapiens_hf` registers the config, every task's model class with its Auto classes,
    the image processor and the pipelines, so that `pipeline("sapiens-depth", model=...)` works."""
    code = """
import json, tempfile
from pathlib import Path
import sapiens_hf
import transformers
from transformers import AutoConfig, AutoImageProcessor, pipeline
from sapiens_hf.tasks import V1_TASKS

config = sapiens_hf.SapiensConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                  decoder_deconv_channels=[8, 8], decoder_conv_channels=[8], image_size=[64, 48])
auto = {f"{task.name}/{auto_class}": getattr(transformers, auto_class)._model_mapping[type(config)].__name__
        for task in V1_TASKS.values() for auto_class in (task.auto_class, *task.extra_auto_classes)}
with tempfile.TemporaryDirectory() as folder:
    sapiens_hf.SapiensForDepthEstimation(config).save_pretrained(folder)
    sapiens_hf.SapiensImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    image = Path(sapiens_hf.__file__).parent / "data" / "astronaut.jpg"
    depth = pipeline("sapiens-depth", model=folder)(str(image), mask=False)["predicted_depth"]
print(json.dumps({"config": type(AutoConfig.for_model("sapiens")).__name__, "auto": auto,
                  "processor": type(processor).__name__, "pipeline_depth": list(depth.shape)}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["config"] == "SapiensConfig" and report["processor"] == "SapiensImageProcessorPil"
    assert report["auto"] == {f"{task.name}/{auto_class}": task.model_class for task in V1_TASKS.values()
                              for auto_class in (task.auto_class, *task.extra_auto_classes)}
    assert report["pipeline_depth"] == [512, 512]  # the sample image's size
