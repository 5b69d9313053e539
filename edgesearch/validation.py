"""The one validation layer for every file edgesearch reads: YAML in, frozen models, one error format.

Trainer configs, study files and stored study configs all go through here:

* :func:`read_yaml` reads a file safely (plain data only) and refuses a key given twice,
  naming the file and both lines;
* :class:`FrozenModel` is the base of every config section: immutable, unknown keys refused;
* :func:`format_validation_error` turns a pydantic error into one line per problem,
  ``FILE: dotted.field: what is wrong; allowed: ...``, whatever the model.

Values echoed in messages go through :func:`shorten`, so a 10,000-character value in a file
never becomes a 10,000-character error line. Importing this module is cheap: pydantic and
PyYAML only, nothing of edgesearch but :mod:`edgesearch.errors`.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sized
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, Tag, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from edgesearch.errors import ConfigError

__all__ = [
    "BOUND_TYPES",
    "MAX_SHOWN_CHARS",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "FrozenModel",
    "allowed_range",
    "format_validation_error",
    "lines_error",
    "load_yaml_text",
    "read_yaml",
    "shorten",
]

MAX_SHOWN_CHARS = 80
"""The longest a value quoted in an error message gets before it is cut."""

_LINES = "edgesearch_lines"
"""pydantic error type whose message is already one or more ``dotted.field: problem`` lines."""

BOUND_TYPES = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_UNION_TAG_TYPES = frozenset({"union_tag_invalid", "union_tag_not_found"})


class FrozenModel(BaseModel):
    """Base of every config section: immutable once validated, and unknown keys are errors.

    ``true``/``false`` are never numbers: pydantic would read ``n_trials: true`` as 1 (YAML's
    ``yes`` too), a typo that silently runs something else.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            wrong = [
                f"{name}: {str(value).lower()} is a boolean, not a number"
                for name, value in data.items()
                if isinstance(value, bool)
                and name in cls.model_fields
                and _takes_numbers_not_booleans(cls.model_fields[name].annotation)
            ]
            if wrong:
                raise lines_error(wrong)
        return data


def _takes_numbers_not_booleans(annotation: Any) -> bool:
    members = (
        typing.get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    )
    return bool not in members and any(member in (int, float) for member in members)


def shorten(value: Any, limit: int = MAX_SHOWN_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with a note of how long it was."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 1]}… ({len(text)} characters)"


def lines_error(lines: Iterable[str]) -> PydanticCustomError:
    """A pydantic error carrying ready-made ``dotted.field: problem`` lines (cross-field rules)."""
    return PydanticCustomError(_LINES, "{detail}", {"detail": "\n".join(lines)})


# ---------------------------------------------------------------------------------------------
# YAML


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(
            f"line {line}: duplicate key {shorten(key)} (first at line {first_line}); each key may appear once"
        )


MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists a config file may have (real ones use 4 or 5 levels)."""

MAX_YAML_NODES = 100_000
"""Most values a config file may hold once its aliases are expanded (real ones hold a few hundred)."""


class _LimitError(yaml.YAMLError):
    """A file that is too deep or expands too far to be a config file."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` holds with every alias expanded, counted up to just past ``limit``.

    Aliases make the node graph a DAG whose expansion can be exponential (a 400-byte "billion
    laughs" file): sizes are computed once per node, bottom-up, never by walking the expansion.
    """
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children: list[yaml.Node] = (
            [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        )
        if children_done:
            sizes[id(node)] = min(limit + 1, 1 + sum(sizes[id(child)] for child in children))
        else:
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key given twice in one mapping, and files built to exhaust memory.

    PyYAML silently keeps the last of two equal keys, so a study file that sets ``n_trials``
    twice would run with whichever came last: a mistake users expect to be told about. Keys
    that a ``<<: *anchor`` merge brings in may still be overridden, as YAML intends. Nesting
    deeper than :data:`MAX_YAML_DEPTH` and aliases expanding past :data:`MAX_YAML_NODES` values
    are refused before anything is built from the file.
    """

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _LimitError(
                    f"line {mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels; a config file needs a few"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise _LimitError(
                f"its aliases expand to more than {MAX_YAML_NODES:,} values; a config file holds a few hundred"
            )
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
            if first is not None:
                raise _DuplicateKeyError(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str) -> Any:
    """Parse YAML text as :func:`read_yaml` does (plain data, no duplicate keys, bounded size).

    Raises yaml.YAMLError for text that is not such YAML, ValueError for an integer of more
    digits than Python converts (4300).
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only


def read_yaml(path: Path) -> Any:
    """Read a YAML file safely; a missing or malformed file, or a key given twice, is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})") from None
    try:
        return load_yaml_text(text)
    except (_DuplicateKeyError, _LimitError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except ValueError as exc:  # Python's limit on the digits of an int literal, and the like
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


# ---------------------------------------------------------------------------------------------
# pydantic errors -> ``FILE: dotted.field: what is wrong; allowed: ...`` lines


def _members(annotation: Any, tags: frozenset[str] = frozenset()) -> list[tuple[type[BaseModel], frozenset[str]]]:
    """The BaseModel classes an annotation may hold (itself, or a union's members), each with the names
    pydantic may put for it into an error's ``loc``: its ``Tag``, its ``kind`` literal, its class name."""
    if typing.get_origin(annotation) is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        tags = tags | {m.tag for m in meta if isinstance(m, Tag)}
        return _members(inner, tags)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        kind = annotation.model_fields.get("kind")
        literal = typing.get_args(kind.annotation) if kind is not None else ()
        names = tags | {annotation.__name__} | ({str(literal[0])} if len(literal) == 1 else set())
        return [(annotation, frozenset(names))]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return [member for arg in typing.get_args(annotation) for member in _members(arg)]
    return []


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    return [model for model, _ in _members(annotation)]


def _tag_of(model: type[BaseModel]) -> str:
    """The value of a discriminated-union member's ``kind`` literal (``"median"``), else its class name."""
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field is not None else ()
    return str(args[0]) if len(args) == 1 else model.__name__


class _Where:
    """Where a pydantic ``loc`` points: the clean dotted parts, the model owning the last one, its siblings."""

    def __init__(self, model: type[BaseModel] | None, loc: tuple[str | int, ...]) -> None:
        self.parts: list[str] = []
        self.owner: type[BaseModel] | None = model
        self.siblings: list[type[BaseModel]] = []
        """The other members of the union that ``owner`` was picked from."""
        self.annotation: Any = model
        self.union: list[type[BaseModel]] = []
        """The union the value was checked against when ``loc`` ends at a union member's tag."""
        annotation: Any = model
        for part in loc:
            key = str(part)
            members = _members(annotation)
            models = [model for model, _ in members]
            if len(models) > 1:
                # A union of models: pydantic puts the member's tag (or class name) into loc; drop it.
                picked = [model for model, names in members if key in names]
                if picked:
                    self.owner, self.siblings = picked[0], [m for m in models if m is not picked[0]]
                    self.union = models
                    annotation = picked[0]
                    continue
            self.union = []
            if len(models) == 1:
                model_here = models[0]
                if model_here is not self.owner:  # a new section: no union around it
                    self.owner, self.siblings = model_here, []
                self.parts.append(key)
                field = model_here.model_fields.get(key)
                annotation = field.annotation if field is not None else None
                continue
            origin = typing.get_origin(annotation)
            self.parts.append(key)
            if origin in (dict, Mapping) or origin is typing.get_origin(Mapping[str, Any]):
                annotation = typing.get_args(annotation)[1]
            elif origin is list:
                annotation = typing.get_args(annotation)[0]
            else:
                annotation = None
        self.annotation = annotation

    def dotted(self, prefix: str = "") -> str:
        """``enqueue.0.loss.kind`` -> ``enqueue[0].loss.kind``: list indexes read as indexes."""
        out = ""
        for part in self.parts:
            if part.isdigit() and out:
                out += f"[{part}]"
            else:
                out += f".{part}" if out else part
        return prefix + out if out else (prefix.rstrip(".") or "(top level)")

    @property
    def leaf(self) -> str:
        return self.parts[-1] if self.parts else ""

    def leaf_field_owner(self) -> type[BaseModel] | None:
        """The model of which the last part is a field (None for a dict key or list index)."""
        if self.owner is not None and self.leaf in self.owner.model_fields:
            return self.owner
        return None


def allowed_range(model: type[BaseModel], loc: tuple[str | int, ...]) -> str | None:
    """The numeric bounds of the field at ``loc`` in ``model``, e.g. ``0 <= x <= 1``."""
    field = None
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        field = current.model_fields[str(part)]
        current = field.annotation
    if field is None:
        return None
    low = high = None
    for meta in field.metadata:
        for attr, sign in (("ge", "<="), ("gt", "<")):
            if getattr(meta, attr, None) is not None:
                low = (getattr(meta, attr), sign)
        for attr, sign in (("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                high = (getattr(meta, attr), sign)
    if low and high:
        return f"{low[0]} {low[1]} x {high[1]} {high[0]}"
    if low:
        return f"x {low[1].replace('<', '>')} {low[0]}"
    if high:
        return f"x {high[1]} {high[0]}"
    return None


def _message(item: Any, where: _Where, hints: Mapping[str, str], shapes: Mapping[str, tuple[str, str]]) -> str:
    kind = item["type"]
    ctx = item.get("ctx") or {}
    leaf = where.leaf
    owner = where.leaf_field_owner()
    bounds = allowed_range(owner, (leaf,)) if owner is not None else None
    got = shorten(item.get("input"))
    if kind == "extra_forbidden":
        fields = list(where.owner.model_fields) if where.owner is not None else []
        message = f"unknown key (check the spelling); allowed: {', '.join(fields) or 'see the README'}"
        elsewhere = [_tag_of(m) for m in where.siblings if leaf in m.model_fields]
        if elsewhere:
            message += f" ({leaf} belongs to {where.parts[0] if where.parts else 'kind'} kind {' / '.join(elsewhere)})"
        return message
    if kind in _UNION_TAG_TYPES:
        tag = f"unknown {leaf} {ctx.get('tag')!r}" if kind == "union_tag_invalid" else "missing"
        expected = str(ctx.get("expected_tags", "?")).replace("'", "")
        return f"{tag}; allowed: {expected}"
    members = where.union or _models_of(where.annotation)
    if kind in ("model_type", "model_attributes_type", "dict_type") and len(members) > 1:
        described = [shapes.get(m.__name__, (m.__name__, m.__name__)) for m in members]
        nouns, forms = " or ".join(d[0] for d in described), " or ".join(d[1] for d in described)
        return f"expected {nouns}, got {got}; allowed: {forms}"
    if kind == "too_short" and ctx.get("min_length") == 1:
        return "empty; allowed: a non-empty list of values"
    if kind == "too_long" and isinstance(item.get("input"), Sized) and "max_length" in ctx:
        return f"{len(item['input'])} entries; allowed: at most {ctx['max_length']}"
    if kind == "missing":
        hint = hints.get(where.dotted(), bounds)
        return "required but missing" + (f"; allowed: {hint}" if hint else "")
    if kind in BOUND_TYPES and bounds is not None:
        return f"{got} is out of range; allowed: {bounds}"
    if kind == "literal_error":
        return f"{got} is not allowed; allowed: {ctx.get('expected', '?')}"
    if kind == "value_error":
        return str(item["msg"]).removeprefix("Value error, ")
    return f"{item['msg']} (got {got})" + (f"; allowed: {bounds}" if bounds else "")


def format_validation_error(
    error: ValidationError,
    *,
    source: str,
    model: type[BaseModel] | None = None,
    prefix: str = "",
    hints: Mapping[str, str] | None = None,
    shapes: Mapping[str, tuple[str, str]] | None = None,
) -> list[str]:
    """One line per problem: ``source: prefix.dotted.field: what is wrong; allowed: ...``.

    ``model`` is the model that was validated: with it, bounds, the allowed keys of a section
    and the members of a union are named in the messages. ``hints`` maps a dotted field to what
    is allowed there when it is missing and its type says too little (a study's ``name``);
    ``shapes`` maps a union member's class name to (noun, example), for a value that is none of
    the union's mappings (``RangeSpec`` -> ``("a range", "{low: .., high: ..}")``).
    """
    lines: list[str] = []
    for item in error.errors():
        where = _Where(model, item["loc"])
        if item["type"] == _LINES:
            # Lines name fields of the section the error was raised in: prefix them with its path.
            section = f"{where.dotted(prefix)}." if where.parts else prefix
            lines.extend(f"{source}: {section}{line}" for line in str(item["msg"]).splitlines())
            continue
        field = where.dotted(prefix)
        if item["type"] in _UNION_TAG_TYPES:
            discriminator = item.get("ctx", {}).get("discriminator", "'kind'").strip("'")
            field = f"{field}.{discriminator}"
        lines.append(f"{source}: {field}: {_message(item, where, hints or {}, shapes or {})}")
    return lines
