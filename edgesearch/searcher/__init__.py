"""The hyperparameter search: study files, search spaces, workers. Optuna lives here (and in the CLI).

The public names are loaded on first use, so that importing a sub-module that does not need
optuna or torch (``edgesearch.searcher.study.config`` to validate a study file) stays cheap.
To export another name, add it to ``_HOME`` (name -> sub-module) and to ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesearch.searcher.results.report import build_report
    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study, load_study

__all__ = ["StudyConfig", "build_report", "create_study", "load_study", "run_worker"]

_HOME = {
    "StudyConfig": "study.config",
    "build_report": "results.report",
    "create_study": "study.studies",
    "load_study": "study.studies",
    "run_worker": "run.worker",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"edgesearch.searcher.{_HOME[name]}"), name)
    raise AttributeError(f"module 'edgesearch.searcher' has no attribute {name!r}")
