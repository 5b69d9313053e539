from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edgesearch.errors import ConfigError
from edgesearch.trainer.config import (
    PRETRAINED_SCHEDULE,
    SCRATCH_SCHEDULE,
    TrainConfig,
    load_train_config,
    validate_train_config,
)
from edgesearch.trainer.device import device_problem
from edgesearch.validation import read_yaml


def test_defaults_follow_the_design() -> None:
    cfg = TrainConfig()
    assert (cfg.model.arch, cfg.model.encoder, cfg.model.encoder_weights) == ("unet", "resnet34", None)
    assert (cfg.loss.kind, cfg.loss.edge_lambda, cfg.loss.edge_width, cfg.loss.round_ratio) == ("bce", 0.15, 2, 0.0)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.backbone_lr_factor) == ("adam", 1e-3, 0.5)
    assert cfg.data.root is None and cfg.data.image_size is None
    # native-resolution patches of 256, a third of them centred on foreground, by default
    assert (cfg.data.resize, cfg.data.window, cfg.data.scale, cfg.data.foreground_fraction) == (False, 256, 1.0, 0.33)
    assert cfg.device == "auto"


def test_config_is_frozen_and_forbids_unknown_keys() -> None:
    cfg = TrainConfig()
    with pytest.raises(ValidationError):
        cfg.epochs = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        TrainConfig.model_validate({"loss": {"lamda": 0.1}})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"loss": {"edge_lambda": 1.5}}, "edge_lambda"),
        ({"loss": {"round_ratio": -0.1}}, "round_ratio"),
        ({"loss": {"edge_width": 0}}, "edge_width"),
        ({"data": {"image_size": 250}}, "image_size"),
        ({"model": {"arch": "transformer9000"}}, "arch"),
        ({"model": {"encoder": "resnet9000"}}, "encoder"),
        ({"model": {"encoder_weights": "missing/weights.pt"}}, "encoder_weights"),
        ({"device": "tpu"}, "device"),
        ({"optim": {"name": "sgd"}}, "name"),
    ],
)
def test_out_of_range_values_are_rejected(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainConfig.model_validate(raw)


def test_unknown_arch_lists_the_allowed_ones() -> None:
    with pytest.raises(ValidationError, match=r"allowed: .*unet.*"):
        TrainConfig.model_validate({"model": {"arch": "nope"}})


def test_timm_encoders_pass_through() -> None:
    assert TrainConfig.model_validate({"model": {"encoder": "tu-resnet10t"}}).model.encoder == "tu-resnet10t"


def test_load_uses_the_trainer_block_of_a_study_file_and_applies_overrides(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nspace: {}\ntrainer:\n  epochs: 4\n  loss: {kind: focal}\n")
    cfg = load_train_config(path, overrides={"epochs": 2, "data": {"batch_size": 3}})
    assert (cfg.epochs, cfg.loss.kind, cfg.data.batch_size) == (2, "focal", 3)


def test_load_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("optim: {lr: -1}\n")
    with pytest.raises(ConfigError, match=r"t.yaml: optim.lr: -1 is out of range; allowed: x > 0"):
        load_train_config(path)
    path.write_text("- just a list\n")
    with pytest.raises(ConfigError, match=r"t.yaml: expected a mapping"):
        load_train_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("epochs: 3\nseed: 1\nepochs: 5\n", r"t.yaml: line 3: duplicate key 'epochs' \(first at line 1\)"),
        ("optim:\n  lr: 0.1\n  name: adam\n  lr: 0.2\n", r"t.yaml: line 4: duplicate key 'lr' \(first at line 2\)"),
        ("loss: {kind: bce, kind: focal}\n", r"t.yaml: line 1: duplicate key 'kind'"),
    ],
)
def test_read_yaml_refuses_a_key_given_twice(tmp_path: Path, text: str, expected: str) -> None:
    # PyYAML would keep the last value silently; the user meant one of them and must be told.
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        read_yaml(path)


def test_read_yaml_lets_a_merge_key_be_overridden(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("common: &c {lr: 0.1, name: adam}\noptim:\n  <<: *c\n  lr: 0.2\n")
    assert read_yaml(path)["optim"] == {"lr": 0.2, "name": "adam"}


def test_unknown_key_errors_list_the_keys_of_that_section(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("optim: {learning_rate: 0.1}\nepoch: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_train_config(path)
    lines = {line.split(": unknown key")[0]: line for line in str(caught.value).splitlines()}
    assert set(lines) == {f"{path}: epoch", f"{path}: optim.learning_rate"}
    assert "allowed: model, data, loss, optim, epochs, seed, device, checkpoint_interval" in lines[f"{path}: epoch"]
    assert "allowed: name, lr, backbone_lr_factor, " in lines[f"{path}: optim.learning_rate"]


def test_wrong_type_errors_show_the_value_and_the_allowed_range(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("epochs: ten\n")
    with pytest.raises(ConfigError, match=r"t.yaml: epochs: .*valid integer.*\(got 'ten'\); allowed: x >= 1"):
        load_train_config(path)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:1", "mps"])
def test_device_problem_accepts_the_documented_devices(device: str) -> None:
    assert device_problem(device) is None


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", ""])
def test_device_problem_names_the_value_and_the_allowed_devices(device: str) -> None:
    assert device_problem(device) == f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N, mps"


def test_a_worker_given_a_gpu_never_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from edgesearch.errors import ConfigError
    from edgesearch.trainer.device import REQUIRE_CUDA_ENV, resolve_device

    monkeypatch.setenv(REQUIRE_CUDA_ENV, "5")
    with pytest.raises(ConfigError, match="was given GPU 5; the config asks for 'cpu'"):
        resolve_device("cpu")
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="given GPU 5, but CUDA is not available"):
            resolve_device("auto")
    monkeypatch.delenv(REQUIRE_CUDA_ENV)
    assert resolve_device("cpu").type == "cpu"


def test_image_size_alone_is_the_resize_mode_of_old_files() -> None:
    """A config written before patches (image_size, no patch fields; every run's config.json had one) resizes."""
    old = TrainConfig.model_validate({"data": {"image_size": 128, "batch_size": 8}})
    assert old.data.resize and old.data.window == 128
    dumped = TrainConfig.model_validate(old.model_dump(mode="json"))  # a config.json of today, read back
    assert dumped == old
    patches = TrainConfig.model_validate({"data": {"patch_size": 64}})
    assert not patches.data.resize and patches.data.window == 64
    assert TrainConfig.model_validate(patches.model_dump(mode="json")) == patches


def _schedule(cfg: TrainConfig) -> dict[str, int]:
    return {"freeze_epochs": cfg.optim.freeze_epochs, "warmup_epochs": cfg.optim.warmup_epochs}


def test_the_two_schedules_differ_and_scratch_has_no_frozen_stage_and_no_warmup() -> None:
    assert dict(SCRATCH_SCHEDULE) == {"freeze_epochs": 0, "warmup_epochs": 0}
    assert set(PRETRAINED_SCHEDULE) == set(SCRATCH_SCHEDULE)
    assert all(PRETRAINED_SCHEDULE[key] != SCRATCH_SCHEDULE[key] for key in SCRATCH_SCHEDULE)


@pytest.mark.parametrize(
    ("model", "pretrained"),
    [
        ({}, False),
        ({"encoder_weights": None}, False),
        ({"encoder_weights": "imagenet"}, True),
        ({"encoder": "mobilenet_v2", "encoder_weights": "packaged"}, True),
        ({"encoder_weights": "WEIGHTS"}, True),  # a local weights file
    ],
)
def test_schedule_defaults_follow_the_encoder_weights(
    tmp_path: Path, model: dict[str, str | None], pretrained: bool
) -> None:
    if model.get("encoder_weights") == "WEIGHTS":
        weights = tmp_path / "encoder.pt"
        weights.write_bytes(b"")
        model = {"encoder_weights": str(weights)}
    cfg = TrainConfig.model_validate({"model": model, "optim": {"lr": 0.01}})
    assert _schedule(cfg) == dict(PRETRAINED_SCHEDULE if pretrained else SCRATCH_SCHEDULE)
    # What is written (config.json, history.json, last.pt, a trial's stored config) holds plain ints.
    dumped = cfg.model_dump(mode="json")["optim"]
    assert {key: dumped[key] for key in SCRATCH_SCHEDULE} == _schedule(cfg)
    assert all(type(dumped[key]) is int for key in SCRATCH_SCHEDULE)


def test_a_trainer_file_with_pretrained_weights_gets_the_pretrained_schedule(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("model: {encoder_weights: imagenet}\nepochs: 4\n")
    assert _schedule(load_train_config(path)) == dict(PRETRAINED_SCHEDULE)
    assert _schedule(load_train_config(path, overrides={"model": {"encoder_weights": None}})) == dict(SCRATCH_SCHEDULE)


@pytest.mark.parametrize("weights", [None, "imagenet"])
@pytest.mark.parametrize(
    "given", [{"freeze_epochs": 0}, {"warmup_epochs": 0}, {"freeze_epochs": 5, "warmup_epochs": 4}]
)
def test_schedule_values_given_win_over_the_defaults_of_the_weights(weights: str | None, given: dict[str, int]) -> None:
    cfg = TrainConfig.model_validate({"model": {"encoder_weights": weights}, "optim": given})
    defaults = PRETRAINED_SCHEDULE if weights else SCRATCH_SCHEDULE
    assert _schedule(cfg) == {**defaults, **given}


def test_a_resolved_config_reads_back_the_same_also_as_stored() -> None:
    cfg = TrainConfig.model_validate({"model": {"encoder_weights": "imagenet"}})
    dumped = cfg.model_dump(mode="json")
    for stored in (False, True):
        again = validate_train_config(dumped, source="config.json", stored=stored)
        assert again == cfg and _schedule(again) == dict(PRETRAINED_SCHEDULE)
    # The numbers written are the run's own: read back with other weights, they stay.
    scratch = validate_train_config(dumped, source="config.json", overrides={"model": {"encoder_weights": None}})
    assert _schedule(scratch) == dict(PRETRAINED_SCHEDULE)
