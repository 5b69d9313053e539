"""Studies in the shared storage: create (or load) one, read its stored config, count trials.

The validated StudyConfig is stored in the study's user attributes at creation, so a worker
needs only the study name and the storage URL, never the YAML file.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from edgesearch.errors import UserError
from edgesearch.searcher.storage._optuna.handles import study_storage, study_user_attr
from edgesearch.searcher.storage.opening import open_storage, set_fault_tolerance
from edgesearch.searcher.storage.urls import redact, storage_option
from edgesearch.searcher.study.run_folders import RUN_ID_ATTR, new_run_id
from edgesearch.validation import shorten

if TYPE_CHECKING:
    from edgesearch.searcher.study.config import StudyConfig

__all__ = [
    "CONFIG_ATTR",
    "FINISHED",
    "TrialCounts",
    "create_study",
    "delete_study",
    "enqueue_point",
    "find_study",
    "load_study",
    "make_pruner",
    "make_sampler",
    "name_metrics",
    "parse_assignments",
    "set_stored_n_trials",
    "stored_config",
    "stored_n_trials",
    "trial_counts",
]

_log = logging.getLogger(__name__)

CONFIG_ATTR = "edgesearch_config"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_SHOWN_DIFFERENCES = 5
"""How many differing fields a refused ``study create`` names (the rest are counted)."""


class _Absent:
    """A key one of two compared configs does not have."""

    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def make_sampler(config: StudyConfig) -> optuna.samplers.BaseSampler:
    """The study's sampler. Seeded, each trial draws from a stream of its own
    (:class:`~edgesearch.searcher.study.sampling.PerTrialSampler`), so workers started any way never propose
    twins; the grid sampler keeps the study's seed, since it hands grid point ``n`` to trial ``n``."""
    from edgesearch.searcher.study.sampling import PerTrialSampler, WorkerGridSampler
    from edgesearch.searcher.study.space import grid_search_space

    cfg = config.sampler
    if cfg.kind == "grid":
        return WorkerGridSampler(grid_search_space(config.space), seed=cfg.seed)
    makers: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
        "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True),
        "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed),
    }
    if cfg.kind not in makers:
        raise ValueError(f"unknown sampler {cfg.kind!r}; allowed: tpe, random, cmaes, grid")
    make = makers[cfg.kind]
    # Unseeded, every process draws from fresh OS entropy: no twins either, and nothing to reproduce.
    return make(None) if cfg.seed is None else PerTrialSampler(make, cfg.seed)


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner, stage-aware (:mod:`~edgesearch.searcher.study.pruning`): no trial is judged
    inside its own warmup, frozen stage and settling epochs."""
    from edgesearch.searcher.study.config import PercentilePrunerConfig
    from edgesearch.searcher.study.pruning import (
        StageAwareHyperbandPruner,
        StageAwareMedianPruner,
        StageAwareSuccessiveHalvingPruner,
    )

    cfg = config.pruner
    if cfg.kind in ("median", "percentile"):
        return StageAwareMedianPruner(
            n_startup_trials=cfg.n_startup_trials,
            n_warmup_steps=cfg.n_warmup_steps,
            interval_steps=cfg.interval_steps,
            percentile=cfg.percentile if isinstance(cfg, PercentilePrunerConfig) else 50.0,
        )
    if cfg.kind == "successive_halving":
        return StageAwareSuccessiveHalvingPruner(
            min_resource=cfg.min_resource,
            reduction_factor=cfg.reduction_factor,
            min_early_stopping_rate=cfg.min_early_stopping_rate,
        )
    if cfg.kind == "hyperband":
        return StageAwareHyperbandPruner(
            min_resource=cfg.min_resource, max_resource=cfg.max_resource, reduction_factor=cfg.reduction_factor
        )
    if cfg.kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {cfg.kind!r}; allowed: median, percentile, successive_halving, hyperband, none")


def _storage_for(
    config: StudyConfig | None, url: str, *, create: bool, read_only: bool = False
) -> optuna.storages.RDBStorage:
    if config is None:
        return open_storage(url, create=create, read_only=read_only)
    ft = config.fault_tolerance
    return open_storage(
        url,
        heartbeat_interval=ft.heartbeat_interval,
        grace_period=ft.grace_period,
        max_retries=ft.max_retries,
        create=create,
        read_only=read_only,
    )


def _stored_form(config: StudyConfig) -> dict[str, Any]:
    # The storage URL may hold a password and is known to whoever reads the study anyway.
    return config.model_copy(update={"storage": None}).to_dict()


def stored_config(study: optuna.Study, *, read_only: bool = False) -> StudyConfig:
    """The study's config as ``study create`` stored it, validated again.

    ``read_only``: for commands that only look at the study; the model checks that depend on this
    machine are skipped (:meth:`~edgesearch.searcher.study.config.StudyConfig.from_dict`, ``stored``), so
    that reading a study imports no torch.
    """
    from edgesearch.searcher.study.config import StudyConfig

    attrs = study.user_attrs
    raw = attrs.get(CONFIG_ATTR)
    if raw is None and RUN_ID_ATTR in attrs:  # an older edgesearch created studies in several steps
        raise UserError(
            f"study {study.study_name!r} is half-created (an interrupted `study create` left it without its "
            f"config); remove it with `edgesearch study delete {study.study_name}` and create it again"
        )
    if raw is None:
        raise UserError(f"study {study.study_name!r} was not created by edgesearch (no stored config)")
    return StudyConfig.from_dict(raw, source=f"study {study.study_name}", stored=read_only)


def stored_n_trials(study: optuna.Study) -> int:
    """The study's ``n_trials`` as the storage holds it now (``study set`` changes it while workers run),
    read in one statement; a KeyError, as Optuna's, when the study is gone."""
    raw = study_user_attr(study, CONFIG_ATTR)
    if not isinstance(raw, dict):
        raise KeyError(f"study {study.study_name!r} has no stored config")
    return int(raw["n_trials"])


def set_stored_n_trials(study: optuna.Study, n_trials: int) -> int:
    """Store ``n_trials`` in the study's config; the value it replaces. The caller holds the admission lock
    (:func:`~edgesearch.searcher.run.worker.set_n_trials`)."""
    raw = study.user_attrs.get(CONFIG_ATTR)
    if not isinstance(raw, dict):
        raise UserError(f"study {study.study_name!r} was not created by edgesearch (no stored config)")
    study.set_user_attr(CONFIG_ATTR, {**raw, "n_trials": n_trials})
    return int(raw["n_trials"])


def create_study(config: StudyConfig, url: str) -> tuple[optuna.Study, bool]:
    """Create the study (storing its config and enqueuing its known-good points) or load it.

    Returns (study, created). Loading an existing study of the same name is fine when its
    stored config is the same; a different config is an error naming the fields that differ, never a
    silent overwrite (``n_trials`` alone is changed with ``study set``).

    Atomic: the study is filled under a hidden name (:mod:`~edgesearch.searcher.study.creating`) and
    renamed when whole, so a killed create leaves nothing under the real name, and the points are
    enqueued exactly once. When two processes create the same study at once, the first rename wins
    and the other drops its copy and loads the winner's.
    """
    from edgesearch.searcher.storage._optuna.handles import rename_study
    from edgesearch.searcher.study.creating import hidden_name

    storage = _storage_for(config, url, create=True)
    names = _study_names(storage)
    if config.name in names:
        return _same_config(config, storage, url), False
    _remove_stale(storage, names)
    directions = [optuna.study.StudyDirection.MAXIMIZE] * len(config.objectives)
    hidden = optuna.create_study(study_name=hidden_name(config.name), storage=storage, directions=directions)
    try:
        hidden.set_user_attr(RUN_ID_ATTR, new_run_id())
        hidden.set_user_attr(CONFIG_ATTR, _stored_form(config))
        name_metrics(hidden, config)
        for point in config.enqueue:
            hidden.enqueue_trial(dict(point))
        renamed = rename_study(hidden, config.name)
    except BaseException:
        _drop(hidden)  # interrupted (Ctrl-C, SIGTERM) or a storage error: leave no leftover when we can
        raise
    if not renamed:  # another process created the study meanwhile
        _drop(hidden)
        return _same_config(config, storage, url), False
    return optuna.load_study(study_name=config.name, storage=storage), True


def name_metrics(study: optuna.Study, config: StudyConfig) -> None:
    """Name the study's objectives after its metrics (``val_iou``, ...), unless they have these names already.

    Optuna's dashboard and ``trials_dataframe`` call an unnamed objective "Objective 0".
    """
    names: list[str] = list(config.objectives)
    if study.metric_names == names:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)


def _study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    # Not optuna.get_all_study_summaries: it reads every trial of every study to count them.
    return [s.study_name for s in storage.get_all_studies()]


def _same_config(config: StudyConfig, storage: optuna.storages.BaseStorage, url: str) -> optuna.Study:
    study = optuna.load_study(study_name=config.name, storage=storage)
    stored, wanted = _stored_form(stored_config(study)), _stored_form(config)
    differences = _differences(stored, wanted)
    if differences:
        shown = "; ".join(
            f"{path}: {shorten(old)} -> {shorten(new)}" for path, old, new in differences[:_SHOWN_DIFFERENCES]
        )
        more = len(differences) - _SHOWN_DIFFERENCES
        shown += f"; and {more} more" if more > 0 else ""
        fix = "delete it (edgesearch study delete) or choose another name"
        if [path for path, _, _ in differences] == ["n_trials"]:  # a study grows (or shrinks) in place
            option = storage_option(url)
            fix = f"to change it, run: edgesearch study set {config.name} --n-trials {config.n_trials}{option}"
        raise UserError(
            f"study {config.name!r} already exists in {redact(url)} with a different config "
            f"(stored -> file: {shown}); {fix}"
        )
    return study


def _differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, old value, new value) wherever two stored configs differ: mappings are followed key by
    key, anything else (a list, a value) is compared whole; a key missing on one side reads ``(absent)``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [(path, old, new)]
    found: list[tuple[str, Any, Any]] = []
    for key in [*old, *(key for key in new if key not in old)]:
        inner = f"{path}.{key}" if path else str(key)
        found.extend(_differences(old.get(key, _ABSENT), new.get(key, _ABSENT), inner))
    return found


def _remove_stale(storage: optuna.storages.BaseStorage, names: list[str]) -> None:
    """Delete the hidden studies that killed creates left behind (see :mod:`~edgesearch.searcher.study.creating`)."""
    from edgesearch.searcher.study.creating import is_stale

    for name in names:
        if is_stale(name):
            with contextlib.suppress(KeyError):  # another create removed it first
                optuna.delete_study(study_name=name, storage=storage)


def _drop(study: optuna.Study) -> None:
    try:
        optuna.delete_study(study_name=study.study_name, storage=study_storage(study))
    except Exception as exc:  # the original error matters more; a leftover is removed by a later create
        _log.warning("could not remove the unfinished study %s: %s", study.study_name, exc)


def find_study(name: str, url: str) -> optuna.Study:
    """The study called ``name``, with or without a stored config (``study delete`` takes any).

    Opened with its config's heartbeat settings when it has one, so that live trials are told
    from dead ones; a UserError listing the storage's studies when there is none of that name.
    """
    try:
        return load_study(name, url)[0]
    except UserError:
        storage = _storage_for(None, url, create=False)
        _check_listed(name, storage, url)  # no such study: that error, not the config's
        return optuna.load_study(study_name=name, storage=storage)


def _check_listed(name: str, storage: optuna.storages.BaseStorage, url: str) -> None:
    from edgesearch.searcher.study.confirm import is_companion
    from edgesearch.searcher.study.creating import is_hidden

    if not is_hidden(name) and not is_companion(name):
        try:  # one lookup on the path every worker takes; the listing only for the error
            storage.get_study_id_from_name(name)
            return
        except KeyError:
            pass
    names = [n for n in _study_names(storage) if not is_hidden(n) and not is_companion(n)]
    if name not in names:
        listing = ", ".join(sorted(names)) or "none"
        raise UserError(f"no study named {shorten(name)} in {redact(url)}; studies there: {listing}")


def load_study(name: str, url: str, *, read_only: bool = False) -> tuple[optuna.Study, StudyConfig]:
    """Load a study by name with the sampler and pruner its stored config names.

    ``read_only``: for commands that only look at the study; the database is left byte-identical
    (see :func:`~edgesearch.searcher.storage.opening.open_storage`), the config is read without the model
    checks that import torch (:func:`stored_config`), and the study gets no sampler or pruner of its
    config: it never asks for a trial (a grid sampler would list its whole grid).
    """
    storage = _storage_for(None, url, create=False, read_only=read_only)
    try:
        _check_listed(name, storage, url)
        config = stored_config(optuna.load_study(study_name=name, storage=storage), read_only=read_only)
    except BaseException:
        storage.engine.dispose()  # its pooled connections, now rather than at a later garbage collection
        raise
    ft = config.fault_tolerance  # the study's own heartbeat settings, on the storage that read them
    set_fault_tolerance(
        storage, heartbeat_interval=ft.heartbeat_interval, grace_period=ft.grace_period, max_retries=ft.max_retries
    )
    if read_only:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.RandomSampler()
        pruner: optuna.pruners.BasePruner = optuna.pruners.NopPruner()
    else:
        sampler, pruner = make_sampler(config), make_pruner(config)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    return study, config


@dataclass(frozen=True)
class TrialCounts:
    """How many of a study's trials are in each state, and the best value so far (or the front's size)."""

    complete: int = 0
    pruned: int = 0
    fail: int = 0
    running: int = 0
    waiting: int = 0
    best: float | None = None
    """The best COMPLETE trial's value; None before the first one, and for a study of two objectives."""
    front: int | None = None
    """For a study of two objectives: how many COMPLETE trials its Pareto front holds; None otherwise."""
    eta_s: float | None = None
    """Seconds until the study is full (:func:`~edgesearch.searcher.study.progress.study_eta`); None when
    unknown or not asked for."""

    @property
    def finished(self) -> int:
        """COMPLETE + PRUNED: the trials that count towards ``n_trials``."""
        return self.complete + self.pruned


def trial_counts(study: optuna.Study, *, n_trials: int | None = None) -> TrialCounts:
    """The study's trials by state and its best value (or front size), from one read of its trials;
    given its ``n_trials``, also its ETA from now."""
    from datetime import datetime

    from edgesearch.searcher.study.front import pareto_front
    from edgesearch.searcher.study.progress import study_eta

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state for t in trials)
    complete = [t.values for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    several = len(study.directions) > 1
    return TrialCounts(
        complete=states[TrialState.COMPLETE],
        pruned=states[TrialState.PRUNED],
        fail=states[TrialState.FAIL],
        running=states[TrialState.RUNNING],
        waiting=states[TrialState.WAITING],
        best=max(values[0] for values in complete) if complete and not several else None,
        front=len(pareto_front(complete)) if several else None,
        eta_s=study_eta(trials, n_trials, datetime.now()) if n_trials is not None else None,
    )


def parse_assignments(assignments: list[str], config: StudyConfig) -> dict[str, Any]:
    """``["loss.kind=focal", "optim.lr=1e-3"]`` -> a point of the study's space, validated.

    Values are YAML scalars (``1e-3`` is a float, ``true`` a bool); the point is checked like
    an ``enqueue:`` entry of the study file: paths of the space, values inside it, and the
    resulting TrainConfig valid.
    """
    import yaml

    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.validation import load_yaml_text

    point: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"enqueue: {shorten(item)} is not PATH=VALUE; e.g. loss.edge_lambda=0.15")
        if key in point:
            raise UserError(f"enqueue: {shorten(key)} is given twice")
        try:
            point[key] = load_yaml_text(text) if text.strip() else text
        except yaml.YAMLError:
            point[key] = text
        except ValueError as exc:  # an integer of more digits than Python converts
            raise UserError(f"enqueue: {shorten(key)}: {exc}") from None
    raw = {**config.to_dict(), "enqueue": [point]}
    StudyConfig.from_dict(raw, source="command line")
    return point


def delete_study(study: optuna.Study, *, force: bool = False) -> None:
    """Delete the study, its trials and its confirmation jobs; refused while workers run any unless ``force``.

    Live means RUNNING with a fresh heartbeat: a worker is training it right now and would stop
    (with exit 2) at its next storage call once the study is gone.
    """
    from edgesearch.searcher.storage._optuna.handles import live_trials
    from edgesearch.searcher.study.confirm import load_companion

    companion = load_companion(study)  # its confirmation jobs go with it
    live = live_trials(study)
    live_jobs = live_trials(companion) if companion is not None else []
    if (live or live_jobs) and not force:
        shown = ", ".join(str(number) for number in live[:10])
        what = f"{len(live)} running trial(s) with live workers (trial {shown})" if live else ""
        if live_jobs:
            what += f"{' and ' if live else ''}{len(live_jobs)} running confirmation job(s) with live workers"
        raise UserError(
            f"study {study.study_name!r} has {what}; stop the workers first, or pass --force to delete it under them"
        )
    if companion is not None:
        optuna.delete_study(study_name=companion.study_name, storage=study_storage(study))
    optuna.delete_study(study_name=study.study_name, storage=study_storage(study))


def enqueue_point(study: optuna.Study, point: dict[str, Any]) -> None:
    """Queue ``point`` (space path -> value) as the next trial any worker takes."""
    study.enqueue_trial(point, skip_if_exists=False)
