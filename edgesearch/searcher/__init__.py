"""The hyperparameter search: study files, search spaces, workers. Optuna lives here (and in the CLI).

The public names are loaded on first use, so that importing a sub-module that does not need
optuna or torch (``edgesearch.searcher.config`` to validate a study file) stays cheap.
To export another name, add it to ``_HOME`` (name -> sub-module) and to ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgesearch.searcher.config import StudyConfig

__all__ = ["StudyConfig"]

_HOME = {
    "StudyConfig": "config",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"edgesearch.searcher.{_HOME[name]}"), name)
    raise AttributeError(f"module 'edgesearch.searcher' has no attribute {name!r}")
