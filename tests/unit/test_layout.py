"""The package layout keeps its promises: pure steps load without Spark, torch or PIL, and only
imagequant/spark/ imports pyspark."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "imagequant"

# Runs in a fresh interpreter where importing any of the blocked packages fails.
_BLOCKED_RUN = r'''
import sys

BLOCKED = ("pyspark", "torch", "torchvision", "PIL")


class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None


sys.meta_path.insert(0, Blocker())

import imagequant.core.entities, imagequant.core.locations, imagequant.core.metrics  # noqa: E401
import imagequant.core.schema, imagequant.core.tokens, imagequant.core.units  # noqa: E401
import imagequant.text.candidates, imagequant.text.features  # noqa: E401
import imagequant.scoring.base, imagequant.scoring.rules, imagequant.scoring.zoo  # noqa: E401
import imagequant.scoring.second_look  # noqa: E401
import imagequant.ocr.zoo, imagequant.config  # noqa: E401
from imagequant.core.tokens import OcrToken
from imagequant.scoring.base import ScoringRow
from imagequant.scoring.zoo import load_scorer
from imagequant.text.candidates import extract_candidates

tokens = [OcrToken("Net", 90, 10, 10, 40, 20, 0, 0, 0), OcrToken("Wt", 90, 55, 10, 30, 20, 0, 0, 1),
          OcrToken("500g", 90, 90, 10, 60, 20, 0, 0, 2)]
candidates = extract_candidates(tokens, "item_weight", (400, 300))
[prediction] = load_scorer("rules").predict([ScoringRow("item_weight", tokens, (400, 300), candidates)])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(prediction.prediction, loaded)
'''


def test_pure_steps_import_without_spark_torch_or_pil() -> None:
    done = subprocess.run([sys.executable, "-c", _BLOCKED_RUN], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "500.0 gram []"


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return found


def test_only_the_spark_package_imports_pyspark() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "spark" in path.parents:
            continue
        if any(name.split(".")[0] == "pyspark" for name in _top_level_imports(path)):
            offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert offenders == []


def test_pure_packages_import_no_framework_at_top_level() -> None:
    offenders = []
    for folder in ("core", "text"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            frameworks = {n.split(".")[0] for n in _top_level_imports(path)} & {"pyspark", "torch", "PIL"}
            if frameworks:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {sorted(frameworks)}")
    assert offenders == []


def _every_import(path: Path) -> set[str]:
    """Every module a file imports, wherever (inside functions and TYPE_CHECKING blocks too), a name imported
    from a package counted as its module (``from imagequant import scoring`` -> ``imagequant.scoring``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


# The one scoring module the pipeline may use: the scorer contract. The scorers themselves, the registry and
# the second look's question are given to it by the jobs.
PIPELINE_MAY_IMPORT = {"imagequant.scoring", "imagequant.scoring.base"}


def test_the_pipeline_reaches_no_scoring_module_but_the_contract() -> None:
    offenders = []
    for path in sorted((PACKAGE / "pipeline").glob("*.py")):
        for name in sorted(_every_import(path)):
            is_scoring = name == "imagequant.scoring" or name.startswith("imagequant.scoring.")
            if is_scoring and name not in PIPELINE_MAY_IMPORT and not name.startswith("imagequant.scoring.base."):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name}")
    assert offenders == []


def test_explain_sees_the_scorer_only_through_its_contract() -> None:
    tree = ast.parse((PACKAGE / "pipeline" / "explain.py").read_text())
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "model" not in attributes  # a network scorer's checkpoint is no part of the contract
    assert not names & {"RuleScorer", "NeuralScorer", "is_rules", "rules"}


# What `make test-fast` promises tests/unit runs without: Spark, torch, and the OCR readers that run ONNX or OpenVINO
# models (a few tests let Tesseract read a drawn label). Tests that need one live in tests/spark, tests/model or
# tests/ocr; importing a module of those folders would load what they load.
UNIT_TESTS_NEVER_IMPORT = {"pyspark", "torch", "torchvision", "onnxruntime", "openvino", "rapidocr_onnxruntime",
                           "imagequant.spark", "imagequant.cnn", "imagequant.cnn_runtime", "imagequant.ocr.rapidocr",
                           "imagequant.ocr.both", "imagequant.ocr.int8", "imagequant.ocr.ppocr_models", "tests.spark",
                           "tests.model", "tests.ocr"}


def test_the_unit_tests_import_no_framework_or_ocr_engine() -> None:
    offenders = []
    for path in sorted((PACKAGE.parent / "tests" / "unit").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        skipped = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                   and ast.unparse(node.func).endswith("importorskip") and isinstance(node.args[0], ast.Constant)}
        for name in sorted(_every_import(path) | skipped):
            if any(name == banned or name.startswith(banned + ".") for banned in UNIT_TESTS_NEVER_IMPORT):
                offenders.append(f"{path.name}: {name}")
    assert offenders == []
