"""What importing a part of edgesearch costs, seen from a fresh interpreter (one process per check).

The CLI's start-up and the searcher's file checks stay fast because heavy libraries are imported
only where they are needed; each check here names what a module must not pull in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _imported(code: str, names: set[str]) -> list[str]:
    """Run ``code`` in a fresh interpreter; which of ``names`` it imported."""
    probe = f"{code}\nimport sys\nprint(sorted({sorted(names)!r} & sys.modules.keys()))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return list(eval(out.strip().splitlines()[-1]))  # a list of str printed by the probe itself


def test_importing_the_trainer_imports_torch_but_not_optuna() -> None:
    code = "import edgesearch.trainer.loop, edgesearch.trainer.epoch\nfrom edgesearch.trainer import train"
    assert _imported(code, {"optuna", "torch"}) == ["torch"]


def test_importing_the_study_config_imports_neither_torch_nor_optuna() -> None:
    modules = "import edgesearch.searcher.study.config, edgesearch.searcher.study.space"
    assert _imported(modules, {"torch", "optuna"}) == []


def test_storage_module_and_plain_sqlite_urls_need_no_torch_optuna_or_sqlalchemy() -> None:
    code = (
        "from edgesearch.searcher.storage.opening import check_url, redact\n"
        "check_url('sqlite:///study.db'); redact('sqlite:///study.db')"
    )
    assert _imported(code, {"torch", "optuna", "sqlalchemy"}) == []


def test_the_cli_modules_import_no_torch_optuna_or_pydantic() -> None:
    assert _imported("import edgesearch.cli", {"torch", "optuna", "pydantic", "sqlalchemy"}) == []


def test_the_sliding_window_module_leaves_monai_to_the_first_call() -> None:
    # MONAI loads all of its subpackages (SciPy and torchvision among them): seconds on every import.
    assert _imported("import edgesearch.trainer.sliding", {"monai", "torch"}) == ["torch"]


HEAVY = {"torch", "segmentation_models_pytorch", "timm", "albumentations", "cv2"}
"""What a command that only reads a study must not import: seconds of start-up, more while workers run."""


@pytest.mark.parametrize(
    "args",
    [
        ["study", "list"],
        ["study", "show", "{name}"],
        ["study", "best", "{name}"],
        ["study", "best", "{name}", "--json"],
        ["study", "export", "{name}"],
        ["study", "export", "{name}", "--format", "json"],
        ["study", "report", "{name}", "--out", "{tmp}/report"],
    ],
    ids=["list", "show", "best", "best-json", "export-csv", "export-json", "report"],
)
def test_commands_that_read_a_study_import_no_torch(
    finished_study: dict[str, Any], tmp_path: Path, args: list[str]
) -> None:
    argv = [arg.format(name=finished_study["name"], tmp=tmp_path) for arg in args]
    code = (
        "from edgesearch.cli import app\n"
        "try:\n"
        f"    app({[*argv, '--storage', finished_study['url']]!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code"
    )
    assert _imported(code, HEAVY) == []


NOT_FOR_ONNX = {"torch", "torchvision", "monai", "segmentation_models_pytorch", "timm", "albumentations"}
"""What ``predict --onnx`` must not import: it runs an exported model with onnxruntime, NumPy and OpenCV alone."""


@pytest.mark.parametrize("options", [[], ["--tta", "--overlay", "--overlap", "0.25", "--blend", "mean"]])
def test_predict_onnx_imports_no_torch(tmp_path: Path, options: list[str]) -> None:
    from PIL import Image

    from edgesearch.trainer.onnx_export import export_onnx
    from tests.helpers import random_run

    trainer = {"model": {"encoder": "resnet18", "encoder_weights": None}, "data": {"patch_size": 64, "scale": 0.5}}
    config, checkpoint = random_run(tmp_path / "run", trainer)
    model = export_onnx(config, checkpoint, tmp_path / "model.onnx").path
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (70, 150, 3), dtype=np.uint8)).save(image)
    argv = ["predict", "--onnx", str(model), str(image), "--out", str(tmp_path / "masks"), *options]
    code = (
        "from edgesearch.cli import app\n"
        "try:\n"
        f"    app({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code"
    )
    assert _imported(code, NOT_FOR_ONNX | {"onnxruntime"}) == ["onnxruntime"]
    assert (tmp_path / "masks" / "in.png").is_file()
