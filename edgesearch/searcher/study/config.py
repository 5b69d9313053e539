"""StudyConfig: a study file (base TrainConfig + search space + sampler/pruner), validated at load time.

Everything a worker needs to run a study is in this object, and :meth:`StudyConfig.to_dict`
makes it plain JSON, so ``study create`` stores it in the study's user attributes and workers
rebuild it with :meth:`StudyConfig.from_dict` from the storage alone. Every rule is checked
here, before anything touches storage: unknown keys, space paths that are not TrainConfig
fields, ranges and choices the trainer would refuse, and enqueued points outside the space.
Problems are reported together, one line each: ``FILE: dotted.field: what is wrong; allowed: ...``.
A study of two objectives (``metric: [val_iou, val_boundary_iou]``) is refused with a pruner or a
sampler that Optuna cannot use for it.

Importing this module is cheap (no optuna, no torch); validating a config runs TrainConfig's
validators, which may load the trainer's model registry (not for a stored config read back, see
:meth:`StudyConfig.from_dict`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from edgesearch.errors import ConfigError
from edgesearch.searcher.storage.opening import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, MAX_RETRIES
from edgesearch.searcher.study.checks import (
    MAX_GRID_POINTS,
    MAX_GRID_SIZE,
    MULTI_OBJECTIVE_SAMPLERS,
    is_choice,
    objective_problems,
    study_problems,
)
from edgesearch.searcher.study.space import (
    Choice,
    SpaceEntry,
)
from edgesearch.trainer.config import MAX_SEED, STORED, TrainConfig, validate_train_config
from edgesearch.validation import (
    FrozenModel,
    format_validation_error,
    lines_error,
    read_yaml,
    shorten,
)

__all__ = [
    "MAX_ENQUEUE",
    "MAX_GRID_POINTS",
    "MAX_GRID_SIZE",
    "MAX_NAME_LENGTH",
    "METRICS",
    "MULTI_OBJECTIVE_SAMPLERS",
    "OBJECTIVES",
    "FaultToleranceConfig",
    "HyperbandPrunerConfig",
    "MedianPrunerConfig",
    "Metric",
    "NoPrunerConfig",
    "Objectives",
    "PrunerConfig",
    "SamplerConfig",
    "StudyConfig",
    "SuccessiveHalvingPrunerConfig",
]

Metric: TypeAlias = Literal["val_iou", "val_boundary_iou", "val_edge_corr"]
METRICS: tuple[str, ...] = ("val_iou", "val_boundary_iou", "val_edge_corr")

Objectives: TypeAlias = tuple[Literal["val_iou"], Literal["val_boundary_iou"]]
OBJECTIVES: Objectives = ("val_iou", "val_boundary_iou")
"""The metrics a study of two objectives maximises together, in this order. val_iou comes first: a
trial's values are read at its best epoch by val_iou, the epoch whose weights its ``best.pt`` holds."""


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_ALLOWED = "letters, digits, '-', '_' and '.', starting with a letter or digit (e.g. lambda-search)"
"""Why the first character is a letter or digit: the name is printed into commands (``edgesearch worker
NAME``), where a name such as ``--help`` or ``-x`` would be read as an option."""
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class SamplerConfig(FrozenModel):
    """Which Optuna sampler proposes trials; trial ``n`` draws from a stream seeded by (``seed``, ``n``)."""

    kind: Literal["tpe", "random", "cmaes", "grid"] = "tpe"
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """``null``: a fresh random seed in every worker (runs are then not reproducible). Otherwise
    :func:`~edgesearch.searcher.study.sampling.trial_seed` gives each trial its own stream, whichever worker
    on whichever machine runs it (the grid sampler uses ``seed`` itself: grid point ``n`` goes to trial ``n``)."""


class MedianPrunerConfig(FrozenModel):
    """The median rule: stop a trial whose best metric since its unstable window is below the median,
    at that epoch, of the complete trials past their own window
    (:class:`~edgesearch.searcher.study.pruning.StageAwareMedianPruner`)."""

    kind: Literal["median"] = "median"
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: int = Field(0, ge=0)
    """Epochs never pruned in any trial, on top of each trial's own unstable window
    (:mod:`~edgesearch.searcher.study.pruning`)."""
    interval_steps: int = Field(1, ge=1)


class PercentilePrunerConfig(MedianPrunerConfig):
    """The median rule at another percentile of the same peers (Optuna's ``PercentilePruner``; the median is
    50): ``percentile: 10`` stops only a trial in the bottom tenth at that epoch. edgesearch's default pruner,
    with 10 warm-up epochs: on the learning-curve table (BENCHMARKS.md, "The search on real learning curves")
    the median rule pruned the best configuration in 15-50% of replayed studies, this one rarely, at the
    regret of no pruning."""

    kind: Literal["percentile"] = "percentile"  # type: ignore[assignment]  # the discriminator of a subclass
    percentile: float = Field(10.0, gt=0.0, lt=100.0)
    n_warmup_steps: int = Field(10, ge=0)
    """Epochs never pruned in any trial (late bloomers), on top of each trial's own unstable window."""


class SuccessiveHalvingPrunerConfig(FrozenModel):
    """``SuccessiveHalvingPruner`` (asynchronous successive halving)."""

    kind: Literal["successive_halving"] = "successive_halving"
    min_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(4, ge=2)
    min_early_stopping_rate: int = Field(0, ge=0)

    @field_validator("min_resource", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        return _auto_or_positive_int(value)


class HyperbandPrunerConfig(FrozenModel):
    """``HyperbandPruner``: several successive-halving brackets over ``[min_resource, max_resource]`` epochs."""

    kind: Literal["hyperband"] = "hyperband"
    min_resource: int = Field(1, ge=1)
    max_resource: int | Literal["auto"] = "auto"
    reduction_factor: int = Field(3, ge=2)

    @field_validator("max_resource", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        return _auto_or_positive_int(value)

    @model_validator(mode="after")
    def _min_below_max(self) -> HyperbandPrunerConfig:
        if isinstance(self.max_resource, int) and self.min_resource > self.max_resource:
            raise ValueError(
                f"min_resource {self.min_resource} is above max_resource {self.max_resource}; "
                "allowed: min_resource <= max_resource"
            )
        return self


class NoPrunerConfig(FrozenModel):
    """No pruning: every trial trains all its epochs."""

    kind: Literal["none"] = "none"


PrunerConfig: TypeAlias = Annotated[
    MedianPrunerConfig
    | PercentilePrunerConfig
    | SuccessiveHalvingPrunerConfig
    | HyperbandPrunerConfig
    | NoPrunerConfig,
    Field(discriminator="kind"),
]
MAX_NAME_LENGTH = 100
"""Longest study name: a folder name on every file system, and a PostgreSQL study_name, with room to spare."""

MAX_ENQUEUE = 1000
"""Most known-good points a study file may enqueue: creating the study writes each one (seconds on PostgreSQL)."""


_HINTS = {"name": _NAME_ALLOWED, "n_trials": "an integer >= 1"}
"""What is allowed for required fields whose type says too little, for "required but missing"."""
_SHAPES = {"RangeSpec": ("a range", "{low: .., high: ..}"), "ChoicesSpec": ("choices", "{choices: [...]}")}
"""How a space entry may look, for an entry that is neither."""


def _auto_or_positive_int(value: Any) -> Any:
    if value == "auto" and isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"expected 'auto' or an integer >= 1, got {shorten(value)}; allowed: auto, 1, 2, ...")


class FaultToleranceConfig(FrozenModel):
    """Heartbeat settings (seconds): a trial silent for ``grace_period`` is failed and retried."""

    heartbeat_interval: int = Field(HEARTBEAT_INTERVAL_S, ge=1, le=3600)
    grace_period: int = Field(GRACE_PERIOD_S, ge=1, le=7 * 86400)
    max_retries: int = Field(MAX_RETRIES, ge=0, le=100)
    """How often one trial is retried after its worker died; 0 = never."""

    @field_validator("grace_period")
    @classmethod
    def _longer_than_heartbeat(cls, value: int, info: ValidationInfo) -> int:
        interval = info.data.get("heartbeat_interval")
        if interval is not None and value <= interval:
            raise ValueError(
                f"{value} is not above heartbeat_interval {interval}, so live trials would be failed; "
                f"allowed: grace_period > heartbeat_interval (e.g. {3 * interval})"
            )
        return value


class StudyConfig(FrozenModel):
    """One study file. Build it with :meth:`from_yaml` or :meth:`from_dict` for readable errors."""

    name: str = Field(max_length=MAX_NAME_LENGTH)
    """Study name in the storage and the folder of its runs: letters, digits, ``-``, ``_``, ``.``, starting
    with a letter or digit; at most :data:`MAX_NAME_LENGTH` characters (every file system and PostgreSQL take it)."""
    metric: Metric | Objectives = "val_iou"
    """Maximised: one metric (a trial's value is its best epoch's metric), or :data:`OBJECTIVES` for a
    study of two objectives (a trial's values are both metrics at its best epoch by val_iou)."""
    n_trials: int = Field(ge=1)
    """COMPLETE + PRUNED trials wanted, counted across all workers."""
    storage: str | None = None
    """SQLAlchemy URL; ``--storage`` and ``EDGESEARCH_STORAGE`` take precedence."""
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    pruner: PrunerConfig = Field(default_factory=PercentilePrunerConfig)
    trainer: TrainConfig = Field(default_factory=TrainConfig)
    """The base TrainConfig; each trial overrides the space's paths in it."""
    space: dict[str, SpaceEntry] = Field(default_factory=dict)
    """Dotted TrainConfig leaf paths -> range or choices; the path is the Optuna parameter name."""
    enqueue: list[dict[str, Choice]] = Field(default_factory=list, max_length=MAX_ENQUEUE)
    """Known-good points (space path -> value) tried before the sampler's own proposals."""
    fault_tolerance: FaultToleranceConfig = Field(default_factory=FaultToleranceConfig)
    keep_checkpoints: int | None = Field(None, ge=1)
    """Finished trials that keep their ``best.pt``: the best K, and those any command still points at;
    the others' are removed as better trials finish (:mod:`~edgesearch.searcher.study.disk`). ``null``
    keeps every one."""

    @property
    def base_config(self) -> TrainConfig:
        """The study's base TrainConfig (the ``trainer:`` block)."""
        return self.trainer

    @property
    def objectives(self) -> tuple[Metric, ...]:
        """The maximised metrics, one per Optuna objective, in the order of a trial's ``values``."""
        return self.metric if isinstance(self.metric, tuple) else (self.metric,)

    @property
    def multi_objective(self) -> bool:
        """Whether the study maximises two metrics at once (it then has a Pareto front, not a best trial)."""
        return len(self.objectives) > 1

    @model_validator(mode="before")
    @classmethod
    def _no_pruner_by_default_for_two_objectives(cls, data: Any) -> Any:
        # The percentile pruner is the default for one metric; Optuna cannot prune a study of two, so a
        # file that leaves pruner: out gets none rather than a refusal of a pruner it never asked for.
        if isinstance(data, Mapping) and isinstance(data.get("metric"), list | tuple) and "pruner" not in data:
            return {**data, "pruner": {"kind": "none"}}
        return data

    @field_validator("metric", mode="before")
    @classmethod
    def _one_metric_or_the_pair(cls, value: Any) -> Any:
        # One line for every wrong value: pydantic would report each member of the union apart.
        if isinstance(value, str) and value in METRICS:
            return value
        if isinstance(value, list | tuple) and list(value) == list(OBJECTIVES):
            return tuple(value)
        *others, last = (repr(metric) for metric in METRICS)
        raise ValueError(
            f"{shorten(value)} is not allowed; allowed: {', '.join(others)} or {last}, "
            f"or the list [{', '.join(OBJECTIVES)}] in this order for two objectives"
        )

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{shorten(value)} cannot be a study name; allowed: {_NAME_ALLOWED}")
        return value

    @field_validator("storage")
    @classmethod
    def _looks_like_url(cls, value: str | None) -> str | None:
        # The value is never echoed: it may hold a password.
        if value is not None and not _URL.match(value):
            raise ValueError(
                "not an SQLAlchemy URL; allowed: e.g. sqlite:///edgesearch.db or postgresql+psycopg://user@host/db"
            )
        return value

    @field_validator("enqueue", mode="before")
    @classmethod
    def _scalar_points(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value  # pydantic reports the wrong type
        lines = []
        for index, point in enumerate(value):
            if not isinstance(point, Mapping):
                lines.append(f"enqueue[{index}]: expected a mapping of space path -> value, got {shorten(point)}")
                continue
            lines.extend(
                f"enqueue[{index}].{path}: {shorten(item)} is not a single value; "
                "allowed: a number, string, true/false, null"
                for path, item in point.items()
                if not is_choice(item)
            )
        if lines:
            raise lines_error(lines)
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> StudyConfig:
        # The space checks are skipped only by from_dict when the trainer block failed and a stand-in
        # base was used; the objective checks need no trainer.
        context = info.context or {}
        lines = objective_problems(self)
        if not context.get("skip_space_checks"):
            lines.extend(study_problems(self, stored=bool(context.get(STORED))))
        if lines:
            raise lines_error(lines)
        return self

    @classmethod
    def from_yaml(cls, path: Path) -> StudyConfig:
        """Read and validate a study file; any problem is a ConfigError whose lines start with ``path``."""
        return cls.from_dict(read_yaml(path), source=str(path))

    @classmethod
    def from_dict(cls, raw: Any, *, source: str, stored: bool = False) -> StudyConfig:
        """Validate a parsed study file (or a stored ``to_dict()``); ``source`` names it in error lines.

        ``stored``: a study's config read back from the storage to be looked at, checked whole when the
        study was created; every rule holds but the model checks that depend on this machine
        (:data:`~edgesearch.trainer.config.STORED`), so that reading a study imports no torch.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping with name, n_trials, trainer, space, ...; got {type(raw).__name__}"
            )
        lines: list[str] = []
        trainer: TrainConfig | None = None
        try:
            trainer = validate_train_config(raw.get("trainer"), source=source, prefix="trainer.", stored=stored)
        except ConfigError as exc:
            lines.extend(str(exc).splitlines())
        shaped = {**raw, "trainer": trainer if trainer is not None else TrainConfig()}
        try:
            config = cls.model_validate(shaped, context={"skip_space_checks": trainer is None, STORED: stored})
        except ValidationError as exc:
            lines.extend(format_validation_error(exc, source=source, model=StudyConfig, hints=_HINTS, shapes=_SHAPES))
        if lines:
            raise ConfigError("\n".join(lines))
        return config

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that :meth:`from_dict` turns back into an equal StudyConfig.

        It includes ``storage`` as written in the file (a URL there may hold a password).
        """
        raw = self.model_dump(mode="json")
        if "model.encoder_weights" in self.space:
            # Trials differ in encoder_weights: the trainer block leaves out the schedule keys its own
            # weights gave it, so that a worker reading it back gives each trial the defaults of the
            # trial's weights. Otherwise every trial has the base's weights and the resolved numbers are
            # stored, as older versions stored them (the same file then matches a study they created).
            raw["trainer"] = self.trainer.as_base(mode="json")
        return raw


# ---------------------------------------------------------------------------------------------
# Cross-field rules: two objectives against the pruner and sampler; space paths and values against
# TrainConfig, the grid sampler, enqueue.
