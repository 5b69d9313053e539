"""StudyConfig: the study files in the repo load, round-trip through JSON, and bad files name file and field."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from edgesearch.errors import ConfigError
from edgesearch.searcher import StudyConfig
from edgesearch.searcher.study.config import (
    HyperbandPrunerConfig,
    PercentilePrunerConfig,
    SuccessiveHalvingPrunerConfig,
)
from edgesearch.searcher.study.space import ChoicesSpec, RangeSpec

STUDIES = Path(__file__).resolve().parents[2] / "studies"

GOOD: dict[str, Any] = {
    "name": "unit",
    "n_trials": 4,
    "trainer": {"model": {"encoder": "resnet18"}, "data": {"image_size": 64}, "epochs": 2},
    "space": {
        "loss.edge_lambda": {"low": 0.0, "high": 0.5},
        "loss.kind": {"choices": ["bce", "focal"]},
        "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
        "optim.warmup_epochs": {"low": 0, "high": 3},
    },
    "enqueue": [{"loss.edge_lambda": 0.15, "loss.kind": "focal"}],
}


def write(tmp_path: Path, raw: Any) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def changed(**top: Any) -> dict[str, Any]:
    raw = copy.deepcopy(GOOD)
    raw.update(top)
    return raw


def with_space(**entries: Any) -> dict[str, Any]:
    raw = copy.deepcopy(GOOD)
    raw["space"].update({path.replace("__", "."): entry for path, entry in entries.items()})
    return raw


def load_error(tmp_path: Path, raw: Any) -> str:
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        StudyConfig.from_yaml(path)
    message = str(info.value)
    for line in message.splitlines():
        assert line.startswith(f"{path}: "), f"error line does not name the file: {line}"
    return message


@pytest.mark.parametrize("name", sorted(p.name for p in STUDIES.glob("*.yaml")))
def test_study_files_in_repo_load(name: str) -> None:
    config = StudyConfig.from_yaml(STUDIES / name)
    assert config.space and config.n_trials >= 1
    assert config.base_config is config.trainer


def test_lambda_study_is_the_reports_search() -> None:
    config = StudyConfig.from_yaml(STUDIES / "lambda.yaml")
    assert (config.name, config.metric, config.n_trials) == ("lambda-search", "val_iou", 200)
    assert (config.sampler.kind, config.sampler.seed) == ("tpe", 0)
    assert config.pruner == PercentilePrunerConfig(percentile=10.0, n_warmup_steps=10)
    base = config.base_config
    assert (base.model.arch, base.model.encoder, base.model.encoder_weights) == ("unet", "resnet34", None)
    assert base.data.root == Path("data/nuclei")
    assert (base.data.image_size, base.data.batch_size, base.epochs) == (256, 16, 30)
    assert config.space["loss.edge_lambda"] == RangeSpec(low=0.0, high=0.5)
    assert config.space["optim.lr"] == RangeSpec(low=1.0e-4, high=1.0e-2, log=True)
    assert config.space["loss.edge_profile"] == ChoicesSpec(choices=["hard", "soft"])
    assert config.space["loss.edge_width"] == ChoicesSpec(choices=[1, 2, 3])
    assert len(config.space) == 10
    assert config.enqueue[0] == {"loss.edge_lambda": 0.15, "loss.kind": "focal", "optim.name": "adam", "optim.lr": 1e-3}
    assert [point["loss.edge_lambda"] for point in config.enqueue] == [0.15, 0.1, 0.2]


def test_data_root_need_not_exist_at_load_time(tmp_path: Path) -> None:
    raw = copy.deepcopy(GOOD)
    raw["trainer"]["data"]["root"] = str(tmp_path / "not-there")
    assert StudyConfig.from_yaml(write(tmp_path, raw)).base_config.data.root == tmp_path / "not-there"


@pytest.mark.parametrize("name", sorted(p.name for p in STUDIES.glob("*.yaml")))
def test_to_dict_round_trips_through_json(name: str) -> None:
    config = StudyConfig.from_yaml(STUDIES / name)
    stored = json.loads(json.dumps(config.to_dict()))  # what an Optuna user attribute holds
    again = StudyConfig.from_dict(stored, source="stored")
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_round_trip_keeps_every_pruner_and_sampler_setting() -> None:
    for pruner in (
        {"kind": "successive_halving", "min_resource": 2, "reduction_factor": 3, "min_early_stopping_rate": 1},
        {"kind": "hyperband", "min_resource": 1, "max_resource": "auto", "reduction_factor": 3},
        {"kind": "hyperband", "min_resource": 2, "max_resource": 30},
        {"kind": "none"},
    ):
        config = StudyConfig.from_dict(
            changed(pruner=pruner, sampler={"kind": "random", "seed": None}, storage="sqlite:///x.db"), source="t"
        )
        assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict())), source="t") == config


def test_defaults_when_optional_blocks_are_left_out() -> None:
    config = StudyConfig.from_dict({"name": "x", "n_trials": 1, "space": GOOD["space"]}, source="t")
    assert config.metric == "val_iou" and config.storage is None
    assert config.sampler.kind == "tpe" and config.pruner.kind == "percentile"
    assert (config.pruner.percentile, config.pruner.n_warmup_steps, config.pruner.n_startup_trials) == (10.0, 10, 5)
    ft = config.fault_tolerance
    assert (ft.heartbeat_interval, ft.grace_period, ft.max_retries) == (30, 90, 2)
    assert config.enqueue == []


def test_pruner_kinds_build_their_own_models() -> None:
    sh = StudyConfig.from_dict(changed(pruner={"kind": "successive_halving"}), source="t").pruner
    hb = StudyConfig.from_dict(changed(pruner={"kind": "hyperband", "max_resource": 30}), source="t").pruner
    assert isinstance(sh, SuccessiveHalvingPrunerConfig) and sh.min_resource == "auto"
    assert isinstance(hb, HyperbandPrunerConfig) and hb.max_resource == 30


def test_grid_sampler_accepts_choices_and_integer_ranges() -> None:
    raw = changed(
        sampler={"kind": "grid"},
        space={"loss.kind": {"choices": ["bce", "focal"]}, "optim.freeze_epochs": {"low": 0, "high": 4, "step": 2}},
        enqueue=[],
    )
    assert StudyConfig.from_dict(raw, source="t").sampler.kind == "grid"


BAD_FILES: list[tuple[str, Any, list[str]]] = [
    ("unknown top-level key", changed(budget=3), ["budget: unknown key", "allowed: name, metric"]),
    ("unknown sampler kind", changed(sampler={"kind": "bayes"}), ["sampler.kind: 'bayes' is not allowed", "'tpe'"]),
    ("unknown sampler key", changed(sampler={"kind": "tpe", "sed": 1}), ["sampler.sed: unknown key"]),
    ("unknown pruner kind", changed(pruner={"kind": "medain"}), ["pruner.kind: unknown pruner 'medain'", "median"]),
    (
        "pruner param of another pruner",
        changed(pruner={"kind": "median", "min_resource": 2}),
        ["pruner.min_resource: unknown key", "n_warmup_steps", "belongs to pruner kind successive_halving"],
    ),
    (
        "hyperband param on successive halving",
        changed(pruner={"kind": "successive_halving", "max_resource": 9}),
        ["pruner.max_resource: unknown key"],
    ),
    ("pruner without kind", changed(pruner={"n_warmup_steps": 2}), ["pruner.kind: missing"]),
    ("negative warmup", changed(pruner={"kind": "median", "n_warmup_steps": -1}), ["pruner.n_warmup_steps: -1"]),
    (
        "path not a TrainConfig field",
        with_space(loss__lamda={"low": 0.0, "high": 0.5}),
        ["space.loss.lamda: not a field of TrainConfig", "loss.edge_lambda"],
    ),
    ("section instead of a field", with_space(loss={"low": 0.0, "high": 0.5}), ["space.loss: loss is a section"]),
    ("unknown section", with_space(model__foo={"choices": [1]}), ["space.model.foo: not a field", "model.encoder"]),
    ("low above high", with_space(loss__edge_lambda={"low": 0.4, "high": 0.1}), ["space.loss.edge_lambda: low 0.4"]),
    (
        "lambda range outside [0, 1]",
        with_space(loss__edge_lambda={"low": 0.0, "high": 1.5}),
        ["space.loss.edge_lambda: high 1.5 is outside the field's allowed values", "0.0 <= x <= 1.0"],
    ),
    (
        "edge width below one",
        with_space(loss__edge_width={"choices": [0, 1, 2]}),
        ["space.loss.edge_width: choice 0 is outside the field's allowed values", "1 <= x <= 64"],
    ),
    (
        "log with low 0",
        with_space(optim__lr={"low": 0.0, "high": 0.01, "log": True}),
        ["space.optim.lr: log: true needs low > 0"],
    ),
    ("empty space", changed(space={}, enqueue=[]), ["space: empty; name at least one TrainConfig path"]),
    (
        "int field with float bounds",
        with_space(optim__warmup_epochs={"low": 0.5, "high": 3}),
        ["space.optim.warmup_epochs: optim.warmup_epochs is an integer field", "low must be an integer"],
    ),
    (
        "range on a non-numeric field",
        with_space(loss__kind={"low": 0, "high": 1}),
        ["space.loss.kind: loss.kind is not a numeric field", "{choices: [...]}", "'bce', 'focal'"],
    ),
    (
        "choice the trainer refuses",
        with_space(loss__kind={"choices": ["bce", "hinge"]}),
        ["space.loss.kind: choice 'hinge' is not an allowed value", "'bce' or 'focal'"],
    ),
    (
        "duplicate choice",
        with_space(loss__kind={"choices": ["bce", "bce"]}),
        ["space.loss.kind: choice 'bce' is listed twice"],
    ),
    ("empty choices", with_space(loss__kind={"choices": []}), ["space.loss.kind.choices: empty"]),
    ("nested choice", with_space(loss__kind={"choices": [["bce"]]}), ["space.loss.kind.choices: ['bce'] is not"]),
    ("range bound not a number", with_space(optim__lr={"low": "tiny", "high": 1e-2}), ["space.optim.lr.low: expected"]),
    ("unknown key in a range", with_space(optim__lr={"low": 1e-4, "high": 1e-2, "lg": 1}), ["space.optim.lr.lg: unk"]),
    ("entry neither range nor choices", with_space(loss__kind="bce"), ["space.loss.kind: expected a range or choices"]),
    (
        "grid sampler with a float range",
        changed(sampler={"kind": "grid"}),
        ["space.loss.edge_lambda: the grid sampler needs a finite list", "space.optim.lr: the grid sampler"],
    ),
    (
        "enqueue value outside range",
        changed(enqueue=[{"loss.edge_lambda": 0.9}]),
        ["enqueue[0].loss.edge_lambda: 0.9 is outside the space's range", "0.0 <= x <= 0.5"],
    ),
    ("enqueue value not a choice", changed(enqueue=[{"loss.kind": "hinge"}]), ["enqueue[0].loss.kind: 'hinge'"]),
    ("enqueue path not in space", changed(enqueue=[{"loss.edge_width": 2}]), ["enqueue[0].loss.edge_width: not a pa"]),
    (
        "enqueue float for an int field",
        changed(enqueue=[{"optim.warmup_epochs": 1.5}]),
        ["enqueue[0].optim.warmup_epochs: 1.5 is not an integer"],
    ),
    (
        "enqueue exponent written as text",
        changed(enqueue=[{"optim.lr": "1e-3"}]),
        ["enqueue[0].optim.lr: '1e-3' is not a number", "write 1.0e-3"],
    ),
    ("enqueue entry not a mapping", changed(enqueue=[0.15]), ["enqueue[0]: expected a mapping"]),
    (
        "grace period not above heartbeat",
        changed(fault_tolerance={"heartbeat_interval": 60, "grace_period": 30}),
        ["fault_tolerance.grace_period: 30 is not above heartbeat_interval 60"],
    ),
    ("unknown fault tolerance key", changed(fault_tolerance={"retries": 1}), ["fault_tolerance.retries: unknown key"]),
    ("n_trials zero", changed(n_trials=0), ["n_trials: 0 is out of range; allowed: x >= 1"]),
    ("n_trials missing", {k: v for k, v in GOOD.items() if k != "n_trials"}, ["n_trials: required but missing"]),
    ("unknown metric", changed(metric="val_loss"), ["metric: 'val_loss' is not allowed", "'val_iou'"]),
    ("name not a folder name", changed(name="a/b"), ["name: 'a/b' cannot be a study name"]),
    ("trainer field out of range", changed(trainer={"loss": {"edge_lambda": 2}}), ["trainer.loss.edge_lambda: 2"]),
    ("trainer unknown key", changed(trainer={"loss": {"lamda": 0.1}}), ["trainer.loss.lamda: unknown key"]),
    ("not a mapping", "- just\n- a list\n", ["expected a mapping"]),
    ("malformed YAML", "name: [unclosed\nspace: {\n", ["malformed YAML at line"]),
]


@pytest.mark.parametrize(("raw", "expected"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_study_file_is_a_config_error_naming_file_and_field(tmp_path: Path, raw: Any, expected: list[str]) -> None:
    message = load_error(tmp_path, raw)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    raw = changed(budget=1, n_trials=0, trainer={"loss": {"edge_lambda": 3}})
    message = load_error(tmp_path, raw)
    assert len(message.splitlines()) == 3
    assert "budget" in message and "n_trials" in message and "trainer.loss.edge_lambda" in message


def test_space_errors_name_every_bad_entry(tmp_path: Path) -> None:
    raw = with_space(loss__lamda={"low": 0, "high": 1}, loss__round_ratio={"low": 0.0, "high": 2.0})
    message = load_error(tmp_path, raw)
    assert "space.loss.lamda" in message and "space.loss.round_ratio: high 2.0" in message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        StudyConfig.from_yaml(tmp_path / "nope.yaml")


def test_storage_error_does_not_print_the_url(tmp_path: Path) -> None:
    message = load_error(tmp_path, changed(storage="postgres-hunter2@db"))
    assert "storage: not an SQLAlchemy URL" in message and "hunter2" not in message


def test_model_validate_applies_the_same_rules() -> None:
    with pytest.raises(ValidationError, match=r"high 1\.5"):
        StudyConfig.model_validate(with_space(loss__edge_lambda={"low": 0.0, "high": 1.5}))


def test_config_is_frozen() -> None:
    config = StudyConfig.from_dict(GOOD, source="t")
    with pytest.raises(ValidationError):
        config.n_trials = 5  # type: ignore[misc]
