"""edgesearch: hyperparameter search for edge-aware binary segmentation.

Layers, each importing only the ones below it (ARCHITECTURE.md):
``edgesearch.cli`` -> ``edgesearch.searcher`` -> ``edgesearch.trainer`` -> the shared leaves
``edgesearch.errors``, ``edgesearch.validation`` and ``edgesearch.files``.
"""

__version__ = "0.1.0"
"""The package version; pyproject.toml reads it from here."""
