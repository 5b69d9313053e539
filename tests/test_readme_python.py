"""The README's "From Python" snippets run as written: the trainer's with its own tiny config, the
search's against a small ``studies/quickstart.yaml`` in a fresh folder (the snippet's relative paths)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippets() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## From Python") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_section_has_the_trainer_and_the_search_snippets() -> None:
    trainer, search = _snippets()
    assert "result.model" in trainer and "from edgesearch.searcher import" in search


@pytest.mark.slow
def test_the_trainer_snippet_trains_and_keeps_the_model_without_a_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(_snippets()[0], str(README), "exec"), {})
    assert capsys.readouterr().out.strip().splitlines()[-1] == "(96, 130)"
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_the_search_snippet_runs_a_study_and_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "studies").mkdir()
    study = tiny_study("quickstart", n_trials=2)
    (tmp_path / "studies" / "quickstart.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    exec(compile(_snippets()[1], str(README), "exec"), {})
    assert (tmp_path / "reports" / "quickstart" / "report.html").is_file()
    assert (tmp_path / "edgesearch.db").is_file()
