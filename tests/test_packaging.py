"""The wheel a user installs: ``python -m build`` makes one, and it runs in a venv of its own.

The fresh venv gets the wheel plus only what ``--help`` and ``--version`` need (Typer and rich):
that proves the package data and the ``edgesearch`` entry point are in the wheel and that the CLI
starts without torch, smp or Optuna. The wheel's declared dependencies are compared with
pyproject.toml, so a user's ``pip install`` brings the rest.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

import edgesearch

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _requirements(lines: list[str]) -> dict[str, str]:
    parsed = [Requirement(line) for line in lines]
    return {req.name: f"{req.extras}{req.specifier}" for req in parsed}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # A copy of what the sdist holds, so that the build's own folders (build/, *.egg-info) stay out of the tree.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "edgesearch", source / "edgesearch", ignore=shutil.ignore_patterns("__pycache__"))
    # --no-isolation: build with this environment's setuptools instead of downloading one.
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    (path,) = out.glob("edgesearch-*.whl")
    return path


def test_the_wheel_holds_every_module_and_the_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "edgesearch = edgesearch.cli:main" in archive.read(entry_points).decode()
        metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith("/METADATA"))))
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "edgesearch").rglob("*.py")}
    assert sources <= names
    assert not any(name.startswith("tests/") for name in names)
    assert metadata["Version"] == edgesearch.__version__
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    required = [req for req in metadata.get_all("Requires-Dist") or [] if "extra ==" not in req]
    assert _requirements(required) == _requirements(declared)


def test_the_wheel_runs_help_and_version_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, capture_output=True, text=True)
    subprocess.run([*pip, "typer", "rich"], check=True, capture_output=True, text=True)
    binary = env_dir / "bin" / "edgesearch"

    version = subprocess.run([str(binary), "--version"], check=True, capture_output=True, text=True, cwd=tmp_path)
    assert version.stdout.strip() == f"edgesearch {edgesearch.__version__}"
    shown = subprocess.run([str(binary), "--help"], check=True, capture_output=True, text=True, cwd=tmp_path)
    for command in ("train", "study", "worker", "dashboard", "predict"):
        assert command in shown.stdout
    # The installed copy is the one that ran, not this source tree.
    where = subprocess.run(
        [str(python), "-c", "import edgesearch, sys; print(edgesearch.__file__); print('torch' in sys.modules)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)) and where[1] == "False"
