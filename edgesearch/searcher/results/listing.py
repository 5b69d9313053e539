"""One line per study for ``edgesearch study list``: read straight from a SQLite file when possible
(:mod:`~edgesearch.searcher.storage.sqlite_summaries`, no SQLAlchemy, no Optuna), else through Optuna."""

from __future__ import annotations

from edgesearch.searcher.storage.opening import existing_sqlite_file
from edgesearch.searcher.storage.sqlite_summaries import StudySummary, read_sqlite_summaries
from edgesearch.searcher.study.confirm import is_companion
from edgesearch.searcher.study.creating import is_hidden

__all__ = ["study_summaries"]


def study_summaries(url: str) -> list[StudySummary]:
    """Every study in the storage at ``url``, oldest first: from the SQLite file directly, else through Optuna.

    Raises the same :class:`~edgesearch.errors.UserError` as
    :func:`~edgesearch.searcher.storage.opening.open_storage` (``create=False``) for a URL or file it cannot use.
    """
    path = existing_sqlite_file(url)
    summaries = read_sqlite_summaries(path) if path is not None else None
    if summaries is None:
        summaries = _optuna_summaries(url)
    # Studies in the making are nobody's yet; confirmation jobs belong to their study.
    return [s for s in summaries if not is_hidden(s.name) and not is_companion(s.name)]


def _optuna_summaries(url: str) -> list[StudySummary]:
    import optuna

    from edgesearch.searcher.storage.opening import open_storage

    summaries = optuna.get_all_study_summaries(open_storage(url, read_only=True), include_best_trial=True)
    return [
        StudySummary(s.study_name, s.n_trials, s.best_trial.value if s.best_trial is not None else None)
        for s in summaries
    ]
