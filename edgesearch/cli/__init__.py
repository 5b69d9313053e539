"""The command line: Typer and rich live here and nowhere else.

Each top-level command has its module (``train``, ``study``, ``worker``, ``dashboard``,
``predict``); each is a thin layer over the library's Python API in
:mod:`edgesearch.trainer` and :mod:`edgesearch.searcher`.
"""

from edgesearch.cli.app import app, main

__all__ = ["app", "main"]
