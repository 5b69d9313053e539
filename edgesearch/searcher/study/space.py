"""The search space: entries over dotted TrainConfig paths, and how a trial turns them into a config.

A study's ``space`` maps dotted paths of :class:`~edgesearch.trainer.config.TrainConfig` leaf
fields (``loss.edge_lambda``) to a range or a list of choices. The path itself is the Optuna
parameter name, so the dashboard, ``enqueue_trial`` and the stored trials all speak the same
names as the YAML file. Whether a range is integer or float comes from the TrainConfig field's
annotation, never from the numbers written in the file.

Everything here is a pure function of its arguments; optuna is imported for typing only, so
that validating a study file does not pull optuna in.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationInfo, field_validator

from edgesearch.errors import ConfigError
from edgesearch.trainer.config import TrainConfig, validate_train_config
from edgesearch.validation import FrozenModel, shorten

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

__all__ = [
    "Choice",
    "ChoicesSpec",
    "RangeSpec",
    "SpaceEntry",
    "apply_params",
    "field_kind",
    "grid_search_space",
    "grid_size",
    "leaf_paths",
    "sample",
    "set_path",
]

Choice: TypeAlias = bool | int | float | str | None
"""A value Optuna can store for a categorical parameter (and YAML can write as a scalar)."""


class RangeSpec(FrozenModel):
    """``{low, high, log?, step?}``: a numeric interval, integer or float as the field is."""

    low: int | float
    high: int | float
    log: bool = False
    """Sample uniformly in log space (needs ``low > 0``); for learning rates and the like."""
    step: int | float | None = None
    """Sample only ``low + k * step``; for an integer field it defaults to 1."""

    @field_validator("low", "high", "step", mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads true as 1, which would hide a typo in the file; other non-numbers
        # get one line here rather than one per member of the int | float union.
        if value is None and info.field_name == "step":
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-4 (no dot) as text
            except ValueError:
                pass
        raise ValueError(f"expected a number, got {shorten(value)}")


class ChoicesSpec(FrozenModel):
    """``{choices: [...]}``: a categorical parameter over the listed values."""

    choices: list[Choice] = Field(min_length=1)

    @field_validator("choices", mode="before")
    @classmethod
    def _scalars(cls, value: Any) -> Any:
        # One clear line instead of pydantic's one error per member of the Choice union.
        if isinstance(value, list):
            for item in value:
                if not (item is None or isinstance(item, bool | int | float | str)):
                    raise ValueError(
                        f"{shorten(item)} is not a single value; allowed: numbers, strings, true/false, null"
                    )
        return value


def _entry_tag(value: Any) -> str:
    if isinstance(value, ChoicesSpec) or (isinstance(value, dict) and "choices" in value):
        return "choices"
    return "range"


SpaceEntry: TypeAlias = Annotated[
    Annotated[RangeSpec, Tag("range")] | Annotated[ChoicesSpec, Tag("choices")],
    Discriminator(_entry_tag),
]
"""One entry of ``space``: a mapping with ``choices`` is a ChoicesSpec, anything else a RangeSpec."""


def _section(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def leaf_paths(prefix: str = "") -> list[str]:
    """The dotted paths of TrainConfig's leaf fields, optionally only those under ``prefix``.

    ``leaf_paths("loss")`` lists ``loss.kind``, ``loss.edge_lambda``, ...; an unknown prefix
    gives an empty list.
    """
    model: type[BaseModel] = TrainConfig
    parts = [part for part in prefix.split(".") if part]
    for part in parts:
        inner = _section(model, part) if part in model.model_fields else None
        if inner is None:
            return []
        model = inner
    return [f"{prefix}.{path}" if prefix else path for path in _leaves(model)]


def _leaves(model: type[BaseModel]) -> list[str]:
    out: list[str] = []
    for name in model.model_fields:
        inner = _section(model, name)
        if inner is None:
            out.append(name)
        else:
            out.extend(f"{name}.{path}" for path in _leaves(inner))
    return out


def field_kind(path: str) -> Literal["int", "float"] | None:
    """``"int"`` or ``"float"`` for a numeric TrainConfig leaf field (``None`` allowed), else None.

    Booleans, strings, literals and paths are not numeric: they are searched with ``choices``.
    Raises KeyError for a path that is not a leaf field.
    """
    model: type[BaseModel] = TrainConfig
    *sections, leaf = path.split(".")
    for part in sections:
        inner = _section(model, part) if part in model.model_fields else None
        if inner is None:
            raise KeyError(path)
        model = inner
    if leaf not in model.model_fields or _section(model, leaf) is not None:
        raise KeyError(path)
    annotation = model.model_fields[leaf].annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        annotation = members[0] if len(members) == 1 else None
    if annotation is bool:
        return None
    if annotation is int:
        return "int"
    if annotation is float:
        return "float"
    return None


def set_path(raw: Mapping[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of the nested mapping ``raw`` with ``value`` at the dotted ``path``.

    Only the mappings along the path are copied; missing ones are created. A non-mapping in the
    way is a ValueError, since the path cannot go through it.
    """
    head, _, rest = path.partition(".")
    out = dict(raw)
    if not rest:
        out[head] = value
        return out
    inner = out.get(head, {})
    if not isinstance(inner, Mapping):
        raise ValueError(f"{path}: {head} holds {shorten(inner)}, not a mapping, so the path cannot continue")
    out[head] = set_path(inner, rest, value)
    return out


def apply_params(
    base: TrainConfig, params: Mapping[str, Any], *, source: str = "trial parameters", stored: bool = False
) -> TrainConfig:
    """``base`` with each dotted ``params`` path set to its value, validated as a new TrainConfig.

    A value the trainer does not allow raises ConfigError, one line per problem, named by ``source``.
    ``stored``: a stored study's config and a trial's parameters, read back to be looked at
    (:data:`~edgesearch.trainer.config.STORED`: no model checks that import torch). The schedule keys
    that ``base`` took from the defaults of its ``model.encoder_weights`` are not carried over, so a trial
    with other weights gets the defaults of its own (:meth:`~edgesearch.trainer.config.TrainConfig.as_base`).
    """
    raw: dict[str, Any] = base.as_base()
    for path, value in params.items():
        raw = set_path(raw, path, value)
    return validate_train_config(raw, source=source, stored=stored)


def sample(trial: BaseTrial, space: Mapping[str, RangeSpec | ChoicesSpec], base: TrainConfig) -> TrainConfig:
    """Ask ``trial`` for a value of every space path (named by the path) and apply them to ``base``.

    Integer fields use ``suggest_int`` (step 1 unless given), float fields ``suggest_float``,
    choices ``suggest_categorical``. Values fixed by ``study.enqueue_trial`` come back unchanged.
    """
    params: dict[str, Any] = {}
    for path, entry in space.items():
        if isinstance(entry, ChoicesSpec):
            params[path] = trial.suggest_categorical(path, list(entry.choices))
        elif field_kind(path) == "int":
            step = 1 if entry.step is None else int(entry.step)
            params[path] = trial.suggest_int(path, int(entry.low), int(entry.high), step=step, log=entry.log)
        else:
            params[path] = trial.suggest_float(path, entry.low, entry.high, step=entry.step, log=entry.log)
    return apply_params(base, params, source=f"trial {getattr(trial, 'number', '?')}")


def grid_search_space(space: Mapping[str, RangeSpec | ChoicesSpec]) -> dict[str, list[Any]]:
    """The ``GridSampler`` search space: each choice list, and each integer range stepped out.

    A float range has no finite grid, so it is a ConfigError (StudyConfig refuses it at load time
    when ``sampler.kind`` is ``grid``).
    """
    return {path: list(_grid_values(path, entry)) for path, entry in space.items()}


def grid_size(space: Mapping[str, RangeSpec | ChoicesSpec]) -> int:
    """How many points :func:`grid_search_space` holds, counted from the choices and ranges without listing
    them (a ConfigError for a float range, as there)."""
    return math.prod(len(_grid_values(path, entry)) for path, entry in space.items())


def _grid_values(path: str, entry: RangeSpec | ChoicesSpec) -> Sequence[Any]:
    """One entry's values on the grid: its choices, or an integer range stepped out (a ``range``, not a list)."""
    if isinstance(entry, ChoicesSpec):
        return entry.choices
    if field_kind(path) == "int":
        step = 1 if entry.step is None else int(entry.step)
        return range(int(entry.low), int(entry.high) + 1, step)
    raise ConfigError(
        f"space.{path}: a float range has no grid; allowed with the grid sampler: "
        "{choices: [...]} or a range over an integer field"
    )
