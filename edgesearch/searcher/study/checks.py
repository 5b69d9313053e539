"""The checks of a study file that look past each field: the objective against the sampler and pruner,
each space entry and enqueued point against ``TrainConfig`` (every value a study may sample must train),
and the grid's size. Each returns every problem it finds, one line each, for ``StudyConfig`` to report
together.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from edgesearch.searcher.study.space import (
    Choice,
    ChoicesSpec,
    RangeSpec,
    field_kind,
    grid_size,
    leaf_paths,
    set_path,
)
from edgesearch.trainer.config import STORED, TrainConfig
from edgesearch.validation import BOUND_TYPES, allowed_range, shorten

if TYPE_CHECKING:
    from edgesearch.searcher.study.config import StudyConfig


MULTI_OBJECTIVE_SAMPLERS: tuple[str, ...] = ("tpe", "random", "grid")
"""The sampler kinds Optuna can run with two objectives (its CmaEsSampler takes one objective only)."""


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


MAX_GRID_POINTS = 1_000_000
"""Most values a range with a ``step`` may hold: Optuna lists them all when it samples."""


MAX_GRID_SIZE = 100_000
"""Most points (combinations of values) the grid sampler's space may hold. Optuna's GridSampler lists
every point in each worker that loads the study: 100,000 points take 0.2 s and 7 MiB there, ten times
as many 2 s and 70 MiB, and a billion more memory than a machine has. A study covers its grid one
trained model per point, so 100,000 is far beyond any grid a study finishes."""


def objective_problems(config: StudyConfig) -> list[str]:
    if not config.multi_objective:
        return []
    metric = f"[{', '.join(config.objectives)}]"
    lines = []
    if config.pruner.kind != "none":
        lines.append(
            f"pruner.kind: {config.pruner.kind!r} cannot be used with metric {metric}: Optuna cannot prune a "
            "study of two objectives; allowed: {kind: none}, or no pruner: key"
        )
    if config.sampler.kind not in MULTI_OBJECTIVE_SAMPLERS:
        lines.append(
            f"sampler.kind: {config.sampler.kind!r} cannot optimise two objectives (metric {metric}); "
            f"allowed: {', '.join(MULTI_OBJECTIVE_SAMPLERS)}"
        )
    return lines


def study_problems(config: StudyConfig, *, stored: bool) -> list[str]:
    lines: list[str] = []
    if not config.space:
        # Enqueued points cannot be checked against an empty space: one line says it all.
        return [
            "space: empty; name at least one TrainConfig path to search, e.g. loss.edge_lambda: {low: 0.0, high: 0.5}"
        ]
    base = config.trainer.as_base()  # what a trial's parameters are set in (apply_params)
    usable: dict[str, RangeSpec | ChoicesSpec] = {}
    for path, entry in config.space.items():
        where = f"space.{path}"
        problem = _path_problem(path)
        if problem is not None:
            lines.append(f"{where}: {problem}")
            continue
        if isinstance(entry, ChoicesSpec):
            entry_lines = _choices_problems(path, entry, base, stored=stored)
        else:
            entry_lines = _range_problems(path, entry, base, stored=stored)
        lines.extend(f"{where}: {line}" for line in entry_lines)
        if not entry_lines:
            usable[path] = entry
    if config.sampler.kind == "grid":
        lines.extend(_grid_problems(usable))
    for index, point in enumerate(config.enqueue):
        lines.extend(_enqueue_problems(index, point, config.space, usable, base, stored=stored))
    return lines


def _grid_problems(space: Mapping[str, RangeSpec | ChoicesSpec]) -> list[str]:
    """Why the grid sampler cannot take ``space``: a float range, or more than :data:`MAX_GRID_SIZE` points."""
    floats = [path for path, entry in space.items() if isinstance(entry, RangeSpec) and field_kind(path) != "int"]
    if floats:
        return [
            f"space.{path}: the grid sampler needs a finite list of values; "
            "allowed: {choices: [...]} or a range over an integer field"
            for path in floats
        ]
    size = grid_size(space)
    if size <= MAX_GRID_SIZE:
        return []
    factors = " x ".join(f"{path} {grid_size({path: entry}):,}" for path, entry in space.items())
    return [
        f"space: the grid sampler's grid has {size:,} points ({factors}); allowed: at most {MAX_GRID_SIZE:,} "
        "points: fewer values, or sampler kind tpe or random"
    ]


def _path_problem(path: str) -> str | None:
    """None when ``path`` is a TrainConfig leaf field, else why not and which paths exist nearby."""
    try:
        field_kind(path)
    except KeyError:
        pass
    else:
        return None
    parts = path.split(".")
    if all(parts) and leaf_paths(path):
        return f"{path} is a section of TrainConfig, not a field; allowed: {', '.join(leaf_paths(path))}"
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if all(parts[:cut]) and leaf_paths(prefix):
            return f"not a field of TrainConfig; allowed under {prefix}: {', '.join(leaf_paths(prefix))}"
    return f"not a field of TrainConfig; allowed: {', '.join(leaf_paths())}"


def _range_problems(path: str, entry: RangeSpec, base: dict[str, Any], *, stored: bool) -> list[str]:
    kind = field_kind(path)
    if kind is None:
        values = _literal_values(path)
        among = f" with values among {values}" if values else ""
        return [f"{path} is not a numeric field, so it has no range; allowed: {{choices: [...]}}{among}"]
    lines = [
        f"{name} {shorten(value)} is not a finite number; allowed: finite numbers"
        for name, value in (("low", entry.low), ("high", entry.high))
        if not math.isfinite(value)
    ]
    if lines:
        return lines
    if kind == "int":
        lines.extend(
            f"{path} is an integer field, so {name} must be an integer (got {shorten(value)}); allowed: whole numbers"
            for name, value in (("low", entry.low), ("high", entry.high))
            if not isinstance(value, int)
        )
        if entry.step is not None and (not isinstance(entry.step, int) or entry.step < 1):
            lines.append(f"step {shorten(entry.step)} is not a positive integer; allowed: 1, 2, 3, ...")
        if entry.log and entry.step not in (None, 1):
            lines.append(f"log: true cannot be combined with step {entry.step}; allowed: log or step, not both")
    else:
        if entry.step is not None and not entry.step > 0:
            lines.append(f"step {shorten(entry.step)} is not positive; allowed: step > 0")
        if entry.log and entry.step is not None:
            lines.append(f"log: true cannot be combined with step {entry.step}; allowed: log or step, not both")
    if entry.low > entry.high:
        lines.append(f"low {entry.low} is above high {entry.high}; allowed: low <= high")
    elif entry.step is not None and entry.step > 0 and (entry.high - entry.low) / entry.step >= MAX_GRID_POINTS:
        lines.append(
            f"step {entry.step!r} makes more than {MAX_GRID_POINTS:,} values between {entry.low} and {entry.high}; "
            f"allowed: step >= {(entry.high - entry.low) / MAX_GRID_POINTS:.3g}"
        )
    if entry.log and entry.low <= 0:
        lines.append(f"log: true needs low > 0 (got low {entry.low}); allowed: low > 0, or log: false")
    if lines:
        return lines
    for name, value in (("low", entry.low), ("high", entry.high)):
        _, problem = _try_value(base, path, value, stored=stored)
        if problem is not None:
            lines.append(f"{name} {shorten(value)} {problem}")
    return lines


def _choices_problems(path: str, entry: ChoicesSpec, base: dict[str, Any], *, stored: bool) -> list[str]:
    lines: list[str] = []
    seen: list[Any] = []
    for choice in entry.choices:
        value, problem = _try_value(base, path, choice, stored=stored)
        if problem is not None:
            lines.append(f"choice {shorten(choice)} {problem}{_yaml_float_hint(choice)}")
        elif any(_same(value, other) for other in seen):
            lines.append(f"choice {shorten(choice)} is listed twice; allowed: each value once")
        else:
            seen.append(value)
    return lines


def _enqueue_problems(
    index: int,
    point: Mapping[str, Choice],
    space: Mapping[str, RangeSpec | ChoicesSpec],
    usable: Mapping[str, RangeSpec | ChoicesSpec],
    base: dict[str, Any],
    *,
    stored: bool,
) -> list[str]:
    where = f"enqueue[{index}]"
    if not point:
        return [f"{where}: empty; allowed: a mapping of space path -> value, e.g. {{loss.edge_lambda: 0.15}}"]
    lines: list[str] = []
    for path, value in point.items():
        if path not in space:
            lines.append(f"{where}.{path}: not a path of space; allowed: {', '.join(space)}")
            continue
        entry = usable.get(path)
        if entry is None:
            continue  # the space entry itself is already reported
        problem = _outside_entry(path, value, entry)
        if problem is not None:
            lines.append(f"{where}.{path}: {problem}")
    if lines:
        return lines
    raw = base
    for path, value in point.items():
        raw = set_path(raw, path, value)
    problem = _config_problem(raw, stored=stored)
    return [] if problem is None else [f"{where}: this point {problem}"]


def _outside_entry(path: str, value: Choice, entry: RangeSpec | ChoicesSpec) -> str | None:
    """Why ``value`` cannot be a value of the space entry, or None when it can (as Optuna checks it)."""
    if isinstance(entry, ChoicesSpec):
        if any(_same(value, choice) for choice in entry.choices):
            return None
        allowed = ", ".join(repr(choice) for choice in entry.choices)
        return f"{shorten(value)} is not one of the space's choices{_yaml_float_hint(value)}; allowed: {allowed}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{shorten(value)} is not a number{_yaml_float_hint(value)}; allowed: {entry.low} <= x <= {entry.high}"
    if field_kind(path) == "int" and not isinstance(value, int):
        return f"{shorten(value)} is not an integer and {path} is an integer field; allowed: whole numbers"
    if not entry.low <= value <= entry.high:
        return f"{shorten(value)} is outside the space's range; allowed: {entry.low} <= x <= {entry.high}"
    if entry.step is not None:
        k = (value - entry.low) / entry.step
        if abs(k - round(k)) > 1.0e-8:
            return f"{shorten(value)} is not on the range's grid; allowed: {entry.low} + k * {entry.step}"
    return None


def _try_value(base: dict[str, Any], path: str, value: Any, *, stored: bool) -> tuple[Any, str | None]:
    """(the value TrainConfig stores for ``path``, None), or (None, why the trainer refuses it)."""
    try:
        config = TrainConfig.model_validate(set_path(base, path, value), context={STORED: stored})
    except ValidationError as exc:
        return None, _describe(exc)
    found: Any = config
    for part in path.split("."):
        found = getattr(found, part)
    return found, None


def _config_problem(raw: dict[str, Any], *, stored: bool) -> str | None:
    try:
        TrainConfig.model_validate(raw, context={STORED: stored})
    except ValidationError as exc:
        return _describe(exc)
    return None


def _describe(exc: ValidationError) -> str:
    """The trainer's objection to a value, phrased to follow ``<what> <value>``."""
    item = exc.errors()[0]
    field = ".".join(str(part) for part in item["loc"])
    if item["type"] in BOUND_TYPES:
        bounds = allowed_range(TrainConfig, item["loc"])
        if bounds is not None:
            return f"is outside the field's allowed values; allowed: {bounds}"
    if item["type"] == "literal_error":
        return f"is not an allowed value; allowed: {item.get('ctx', {}).get('expected', '?')}"
    message = str(item["msg"]).removeprefix("Value error, ")
    return f"is refused by the trainer ({field}: {message})"


def _literal_values(path: str) -> str | None:
    """The allowed values of a Literal or bool field, for hints; None for free-form fields."""
    model: Any = TrainConfig
    *sections, leaf = path.split(".")
    for part in sections:
        model = model.model_fields[part].annotation
    annotation = model.model_fields[leaf].annotation
    if annotation is bool:
        return "true, false"
    if typing.get_origin(annotation) is Literal:
        return ", ".join(repr(arg) for arg in typing.get_args(annotation))
    return None


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python, but not in a config file.
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def is_choice(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _yaml_float_hint(value: Any) -> str:
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        mantissa, _, exponent = value.strip().lower().partition("e")
        fixed = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent}"
        return f" (YAML reads {value} as text; write {fixed})"
    return ""
