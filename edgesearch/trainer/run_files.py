"""The files of a run directory, named once: the trainer writes them, the searcher and CLI read them."""

from __future__ import annotations

from typing import Final

__all__ = ["BEST", "CONFIG", "CURVES", "EDGES", "HISTORY", "LAST", "TRIAL", "TRIAL_ARTIFACTS"]

CONFIG: Final = "config.json"
"""The run's TrainConfig, all a run needs to be rebuilt (prediction reads it beside best.pt)."""
BEST: Final = "best.pt"
"""The model's state dict at its best validation epoch."""
LAST: Final = "last.pt"
"""Everything needed to resume: model, optimizer, schedule, RNG state, history."""
HISTORY: Final = "history.json"
"""The list of epoch records."""
CURVES: Final = "curves.png"
"""Loss and validation metrics per epoch."""
EDGES: Final = "edges.png"
"""The edge overlay of the best and worst validation images (drawn for study trials)."""
TRIAL: Final = "trial.json"
"""Which study and trial a study trial's run folder belongs to (written before training)."""
TRIAL_ARTIFACTS: Final = (CURVES, EDGES, BEST)
"""The files a study trial uploads to the artifact store (those that exist)."""
