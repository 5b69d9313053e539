"""``RoutedRDBStorage``: Optuna's ``RDBStorage`` with every database call routed through one public hook.

Subclass this, never ``RDBStorage`` itself, so that no override of an Optuna private method lives outside
this package. Every method that touches the database, the private ones among them, runs through
:meth:`RoutedRDBStorage.database_call` (a subclass overrides it to retry through outages); Optuna's search
for stale trials calls :meth:`RoutedRDBStorage.find_stale_trials`; and on PostgreSQL the per-trial writes
of :data:`~edgesearch.searcher.storage._optuna.queries.FAST_WRITES` take one statement.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from optuna.storages import RDBStorage

from edgesearch.searcher.storage._optuna.queries import FAST_WRITE_RESULTS, FAST_WRITES

__all__ = ["DATABASE_CALLS", "RoutedRDBStorage"]

DATABASE_CALLS = (
    "_get_trials",
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_param",
    "set_trial_state_values",
    "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number",
    "get_all_trials",
    "get_best_trial",
    "record_heartbeat",
)
"""RDBStorage's methods that touch the database and have no one-statement form. Its other private helpers
run inside these calls, so they are left alone."""


class RoutedRDBStorage(RDBStorage):
    """``RDBStorage`` whose database calls go through :meth:`database_call`."""

    def database_call(self, name: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``call(*args, **kwargs)``, the body of the storage method ``name``: here as it is."""
        return call(*args, **kwargs)

    def find_stale_trials(self, study_id: int) -> list[int]:
        """The ids of the study's RUNNING trials whose heartbeat is older than the grace period (Optuna's query)."""
        found: list[int] = super()._get_stale_trial_ids(study_id)
        return found

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        found: list[int] = self.database_call("_get_stale_trial_ids", self.find_stale_trials, study_id)
        return found


def _routed(name: str) -> Callable[..., Any]:
    original = getattr(RDBStorage, name)

    @functools.wraps(original)
    def method(self: RoutedRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return self.database_call(name, getattr(super(RoutedRDBStorage, self), name), *args, **kwargs)

    return method


def _routed_fast(name: str) -> Callable[..., Any]:
    """The method ``name`` in one statement on PostgreSQL (:data:`FAST_WRITES`), else Optuna's; routed."""
    original = getattr(RDBStorage, name)
    fast = FAST_WRITES[name]

    @functools.wraps(original)
    def method(self: RoutedRDBStorage, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            if self.engine.dialect.name == "postgresql" and fast(self, *args, **kwargs):
                return FAST_WRITE_RESULTS.get(name)
            return original(self, *args, **kwargs)

        return self.database_call(name, call)

    return method


for _name in DATABASE_CALLS:
    setattr(RoutedRDBStorage, _name, _routed(_name))
for _name in FAST_WRITES:
    setattr(RoutedRDBStorage, _name, _routed_fast(_name))
