"""TrainConfig: every knob of one training run, validated once at the edge.

The config is plain data (nanoGPT style): it is saved next to every checkpoint as
``config.json`` and is all a run needs to be reproduced. Each part is a frozen pydantic
model with defaults, so a YAML file names only what differs from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgesearch.errors import ConfigError

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SyntheticConfig",
    "TrainConfig",
    "device_problem",
    "format_validation_error",
    "load_train_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Which segmentation_models_pytorch model to build."""

    arch: str = "unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    """``null`` (random init), ``imagenet`` (downloaded by smp) or a path to a local state dict."""
    in_channels: int = Field(3, ge=1)

    @field_validator("encoder_weights")
    @classmethod
    def _weights_file_exists(cls, value: str | None) -> str | None:
        from edgesearch.trainer.model import is_local_weights

        if value is not None and is_local_weights(value) and not Path(value).is_file():
            raise ValueError(f"{value}: no such weights file; allowed: null, imagenet (online) or a local file")
        return value

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        from edgesearch.trainer.model import available_archs

        allowed = available_archs()
        if value.lower() not in allowed:
            raise ValueError(f"unknown arch {value!r}; allowed: {', '.join(allowed)}")
        return value.lower()

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, value: str) -> str:
        from edgesearch.trainer.model import available_encoders

        if value.startswith("tu-"):
            # Any timm model; checked here, since timm itself would only fail once a trial builds it.
            import difflib

            import timm

            if not timm.is_model(value[3:]):
                close = difflib.get_close_matches(value[3:], timm.list_models(), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join('tu-' + name for name in close)}?" if close else ""
                raise ValueError(
                    f"unknown timm model {value[3:]!r}; allowed: 'tu-' + a name in timm.list_models(){hint}"
                )
            return value
        allowed = available_encoders()
        if value not in allowed:
            raise ValueError(
                f"unknown encoder {value!r}; allowed: an smp encoder such as "
                f"{', '.join(allowed[:8])}, ... or 'tu-<timm model name>'"
            )
        return value


class SyntheticConfig(_Frozen):
    """The built-in dataset of random shapes used when ``data.root`` is null."""

    n_images: int = Field(64, ge=4)
    seed: int = 0


class DataConfig(_Frozen):
    root: Path | None = None
    """Folder with ``images/`` + ``masks/`` (or ``train/`` + ``val/``); null = synthetic data."""
    image_size: int = Field(256, ge=32)
    batch_size: int = Field(16, ge=1)
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    num_workers: int = Field(2, ge=0)
    augment: bool = True
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        # Every smp encoder downsamples 5 times; other sizes fail deep inside the decoder.
        if value % 32:
            raise ValueError(
                f"must be a multiple of 32 (the encoders downsample by 32), got {value}; "
                f"try {max(32, round(value / 32) * 32)}"
            )
        return value


class LossConfig(_Frozen):
    kind: Literal["bce", "focal"] = "bce"
    focal_gamma: float = Field(2.0, ge=0.0)
    focal_alpha: float | None = Field(None, ge=0.0, le=1.0)
    round_ratio: float = Field(0.0, ge=0.0, le=1.0)
    edge_lambda: float = Field(0.15, ge=0.0, le=1.0)
    edge_width: int = Field(2, ge=1)


class OptimConfig(_Frozen):
    name: Literal["adam", "rmsprop"] = "adam"
    lr: float = Field(1.0e-3, gt=0.0)
    backbone_lr_factor: float = Field(0.5, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_epochs: int = Field(1, ge=0)
    freeze_epochs: int = Field(3, ge=0)
    plateau_patience: int = Field(3, ge=0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)


class TrainConfig(_Frozen):
    """One training run. ``TrainConfig.model_validate(dict)`` is the way in."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    epochs: int = Field(30, ge=1)
    seed: int = 0
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        problem = device_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def device_problem(value: str) -> str | None:
    """None for a device name the trainer accepts, else what is wrong and what is allowed.

    Shared by ``TrainConfig.device`` and the CLI's ``--device`` options, so both say the same.
    """
    head, _, index = value.partition(":")
    if head in ("auto", "cpu", "mps") and not index:
        return None
    if head == "cuda" and (not index or index.isdigit()):
        return None
    return f"unknown device {value!r}; allowed: auto, cpu, cuda, cuda:N, mps"


_BOUND_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def allowed_range(model: type[BaseModel], loc: tuple[str | int, ...]) -> str | None:
    """The numeric bounds of the field at ``loc`` in ``model``, e.g. ``0 <= x <= 1``."""
    field = None
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        field = model.model_fields[str(part)]
        model = field.annotation  # type: ignore[assignment]
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


def _section_fields(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str] | None:
    """The field names of the (nested) model that owns the last part of ``loc``, or None if unknown."""
    owner: Any = model
    for part in loc[:-1]:
        if not (isinstance(owner, type) and issubclass(owner, BaseModel)) or part not in owner.model_fields:
            return None
        owner = owner.model_fields[str(part)].annotation
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        return list(owner.model_fields)
    return None


def format_validation_error(
    error: ValidationError, *, source: str, prefix: str = "", model: type[BaseModel] | None = None
) -> str:
    """One line per problem: ``source: prefix.dotted.field: what is wrong; allowed: ...``."""
    lines = []
    for item in error.errors():
        loc = prefix + ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        bounds = allowed_range(model, item["loc"]) if model is not None else None
        if bounds is not None and item["type"] in _BOUND_TYPES:
            message = f"{item['input']!r} is out of range; allowed: {bounds}"
        elif item["type"] == "extra_forbidden":
            fields = _section_fields(model, item["loc"]) if model is not None else None
            allowed = ", ".join(fields) if fields else "see the README"
            message = f"unknown key (check the spelling); allowed: {allowed}"
        elif item["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        elif "input" in item and item["type"] not in ("missing",):
            message = f"{message} (got {item['input']!r})" + (f"; allowed: {bounds}" if bounds else "")
        lines.append(f"{source}: {loc}: {message}")
    return "\n".join(lines)


class _DuplicateKeyError(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        super().__init__(f"line {line}: duplicate key {key!r} (first at line {first_line}); each key may appear once")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML silently keeps the last of two equal keys, so a study file that sets ``n_trials``
    twice would run with whichever came last: a mistake users expect to be told about. Keys
    that a ``<<: *anchor`` merge brings in may still be overridden, as YAML intends.
    """

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


def read_yaml(path: Path) -> Any:
    """Read a YAML file safely; a missing or malformed file, or a key given twice, is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the file ({exc})") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: builds plain data only
    except _DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def validate_train_config(
    raw: Any, *, source: str, prefix: str = "", overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Validate a mapping into a TrainConfig, raising ConfigError with one line per problem."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = f"{source}: {prefix.rstrip('.')}" if prefix else source
        raise ConfigError(f"{where}: expected a mapping of trainer settings, got {type(raw).__name__}")
    merged = _deep_merge(raw, overrides or {})
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source, prefix=prefix, model=TrainConfig)) from None


def load_train_config(path: Path, *, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Load a trainer config from a bare trainer file or from a study file's ``trainer:`` block.

    ``overrides`` is a nested mapping applied on top (used by CLI options such as ``--epochs``).
    """
    raw = read_yaml(path)
    prefix = ""
    if isinstance(raw, dict) and "trainer" in raw:
        raw, prefix = raw["trainer"], "trainer."
    return validate_train_config(raw, source=str(path), prefix=prefix, overrides=overrides)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
