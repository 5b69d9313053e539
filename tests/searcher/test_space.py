"""The search space: dotted paths onto TrainConfig, and real Optuna trials sampled through it."""

from __future__ import annotations

import itertools
from typing import Any

import optuna
import pytest

from edgesearch.errors import ConfigError
from edgesearch.searcher.study.checks import MAX_GRID_SIZE
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.space import (
    ChoicesSpec,
    RangeSpec,
    apply_params,
    field_kind,
    grid_search_space,
    grid_size,
    leaf_paths,
    sample,
    set_path,
)
from edgesearch.searcher.study.studies import CONFIG_ATTR, create_study, load_study
from edgesearch.trainer.config import PRETRAINED_SCHEDULE, SCRATCH_SCHEDULE, LossConfig, TrainConfig

SPACE: dict[str, Any] = {
    "loss.edge_lambda": {"low": 0.0, "high": 0.5},
    "loss.kind": {"choices": ["bce", "focal"]},
    "loss.round_ratio": {"low": 0.0, "high": 0.5, "step": 0.1},
    "loss.edge_width": {"choices": [1, 2, 3]},
    "loss.focal_alpha": {"choices": [None, 0.25]},
    "optim.name": {"choices": ["adam", "rmsprop"]},
    "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "optim.backbone_lr_factor": {"low": 0.1, "high": 1.0},
    "optim.warmup_epochs": {"low": 0, "high": 3},
    "optim.freeze_epochs": {"low": 0, "high": 6, "step": 2},
    "data.batch_size": {"low": 2, "high": 64, "log": True},
    "data.augment": {"choices": [True, False]},
}
ENQUEUE = [
    {"loss.edge_lambda": 0.15, "loss.kind": "focal", "optim.name": "adam", "optim.lr": 1.0e-3},
    {"loss.edge_lambda": 0.1, "loss.edge_width": 2, "optim.warmup_epochs": 2, "data.augment": False},
]


@pytest.fixture(scope="module")
def study_config() -> StudyConfig:
    raw = {"name": "space", "n_trials": 50, "trainer": {"epochs": 3}, "space": SPACE, "enqueue": ENQUEUE}
    return StudyConfig.from_dict(raw, source="test")


def field_value(config: TrainConfig, path: str) -> Any:
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


def quiet_study(sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize", sampler=sampler)


def test_set_path_returns_a_new_nested_dict() -> None:
    raw = {"loss": {"kind": "bce"}, "epochs": 3}
    out = set_path(raw, "loss.edge_lambda", 0.2)
    assert out == {"loss": {"kind": "bce", "edge_lambda": 0.2}, "epochs": 3}
    assert raw == {"loss": {"kind": "bce"}, "epochs": 3}
    assert set_path({}, "data.synthetic.seed", 4) == {"data": {"synthetic": {"seed": 4}}}
    assert set_path(raw, "epochs", 5)["epochs"] == 5


def test_set_path_refuses_to_walk_through_a_value() -> None:
    with pytest.raises(ValueError, match="not a mapping"):
        set_path({"epochs": 3}, "epochs.count", 1)


def test_apply_params_sets_dotted_fields_and_leaves_the_rest() -> None:
    base = TrainConfig.model_validate({"epochs": 7, "loss": {"kind": "bce"}})
    cfg = apply_params(base, {"loss.edge_lambda": 0.3, "optim.name": "rmsprop", "data.synthetic.seed": 9})
    assert (cfg.loss.edge_lambda, cfg.optim.name, cfg.data.synthetic.seed) == (0.3, "rmsprop", 9)
    assert (cfg.epochs, cfg.loss.kind, cfg.optim.lr) == (7, "bce", base.optim.lr)
    assert base.loss.edge_lambda == 0.15  # the base is not changed


def test_apply_params_validates_the_result() -> None:
    with pytest.raises(ConfigError, match=r"trial parameters: loss\.edge_lambda: 1\.5 is out of range"):
        apply_params(TrainConfig(), {"loss.edge_lambda": 1.5})


def test_field_kind_comes_from_the_annotation() -> None:
    assert field_kind("loss.edge_width") == "int"
    assert field_kind("loss.edge_lambda") == "float"
    assert field_kind("loss.focal_alpha") == "float"  # float | None
    assert field_kind("loss.kind") is None and field_kind("data.augment") is None and field_kind("data.root") is None
    for bad in ("loss", "loss.lamda", "nope.x", ""):
        with pytest.raises(KeyError):
            field_kind(bad)


def test_leaf_paths_list_the_fields_of_a_section() -> None:
    assert leaf_paths("loss") == [f"loss.{name}" for name in LossConfig.model_fields]
    assert "data.synthetic.n_images" in leaf_paths() and "epochs" in leaf_paths()
    assert leaf_paths("loss.kind") == [] and leaf_paths("nope") == []


def test_sampled_configs_validate_and_stay_inside_the_space(study_config: StudyConfig) -> None:
    study = quiet_study(optuna.samplers.RandomSampler(seed=3))
    for _ in range(50):
        trial = study.ask()
        cfg = sample(trial, study_config.space, study_config.base_config)
        assert set(trial.params) == set(SPACE)
        for path, entry in study_config.space.items():
            value = trial.params[path]
            assert field_value(cfg, path) == value, path
            if isinstance(entry, ChoicesSpec):
                assert value in entry.choices
            else:
                assert entry.low <= value <= entry.high
                if entry.step is not None:
                    k = (value - entry.low) / entry.step
                    assert abs(k - round(k)) < 1e-8
        assert cfg.epochs == 3  # untouched base fields come through
        study.tell(trial, cfg.loss.edge_lambda)


def test_integer_fields_are_sampled_as_integers(study_config: StudyConfig) -> None:
    study = quiet_study(optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        cfg = sample(trial, study_config.space, study_config.base_config)
        for path in ("optim.warmup_epochs", "optim.freeze_epochs", "data.batch_size"):
            assert type(trial.params[path]) is int and type(field_value(cfg, path)) is int
        assert cfg.optim.freeze_epochs % 2 == 0
        assert isinstance(trial.distributions["optim.warmup_epochs"], optuna.distributions.IntDistribution)
        assert isinstance(trial.distributions["loss.edge_lambda"], optuna.distributions.FloatDistribution)
        study.tell(trial, 0.0)


def test_enqueued_points_come_out_first_with_their_values(study_config: StudyConfig) -> None:
    study = quiet_study(optuna.samplers.TPESampler(seed=0))
    for point in study_config.enqueue:
        study.enqueue_trial(dict(point))
    for point in study_config.enqueue:
        trial = study.ask()
        cfg = sample(trial, study_config.space, study_config.base_config)
        for path, value in point.items():
            assert trial.params[path] == value and field_value(cfg, path) == value
            assert type(field_value(cfg, path)) is type(value)
        study.tell(trial, 0.5)
    trial = study.ask()  # after the queue, the sampler's own proposals
    assert set(trial.params) == set() and sample(trial, study_config.space, study_config.base_config).epochs == 3


def test_grid_search_space_lists_choices_and_steps_integer_ranges() -> None:
    space: dict[str, RangeSpec | ChoicesSpec] = {
        "loss.kind": ChoicesSpec(choices=["bce", "focal"]),
        "optim.warmup_epochs": RangeSpec(low=0, high=2),
        "optim.freeze_epochs": RangeSpec(low=1, high=7, step=3),
    }
    assert grid_search_space(space) == {
        "loss.kind": ["bce", "focal"],
        "optim.warmup_epochs": [0, 1, 2],
        "optim.freeze_epochs": [1, 4, 7],
    }
    with pytest.raises(ConfigError, match=r"loss\.edge_lambda: a float range has no grid"):
        grid_search_space({"loss.edge_lambda": RangeSpec(low=0.0, high=0.5)})


def test_the_grid_is_counted_without_listing_it_and_bounded_when_a_study_file_is_read() -> None:
    small: dict[str, RangeSpec | ChoicesSpec] = {
        "loss.kind": ChoicesSpec(choices=["bce", "focal"]),
        "optim.freeze_epochs": RangeSpec(low=1, high=7, step=3),
    }
    assert grid_size(small) == len(list(itertools.product(*grid_search_space(small).values()))) == 6
    billion = {
        "loss.edge_width": RangeSpec(low=1, high=64),
        "epochs": RangeSpec(low=1, high=1000),
        "seed": RangeSpec(low=0, high=15624),
    }
    assert grid_size(billion) == 10**9  # counted, never listed
    raw = {
        "name": "grid",
        "n_trials": 6,
        "sampler": {"kind": "grid"},
        "space": {"epochs": {"low": 1, "high": MAX_GRID_SIZE}},
    }
    StudyConfig.from_dict(raw, source="test")  # at the limit: accepted
    raw["space"] = {**raw["space"], "loss.kind": {"choices": ["bce", "focal"]}}
    with pytest.raises(ConfigError, match=r"space: the grid sampler's grid has 200,000 points \(epochs 100,000 x "):
        StudyConfig.from_dict(raw, source="test")


def test_grid_sampler_visits_every_combination_once() -> None:
    raw = {
        "name": "grid",
        "n_trials": 6,
        "sampler": {"kind": "grid"},
        "space": {"loss.kind": {"choices": ["bce", "focal"]}, "optim.warmup_epochs": {"low": 0, "high": 2}},
    }
    config = StudyConfig.from_dict(raw, source="test")
    study = quiet_study(optuna.samplers.GridSampler(grid_search_space(config.space), seed=0))
    seen: list[tuple[str, int]] = []

    def objective(trial: optuna.Trial) -> float:
        cfg = sample(trial, config.space, config.base_config)
        seen.append((cfg.loss.kind, cfg.optim.warmup_epochs))
        return 0.0

    # optimize(), not ask/tell: GridSampler calls study.stop() after the last grid point,
    # which Optuna only allows inside optimize().
    study.optimize(objective, n_trials=10)
    assert sorted(seen) == sorted(itertools.product(["bce", "focal"], [0, 1, 2]))


WEIGHTS_SPACE: dict[str, Any] = {"model.encoder_weights": {"choices": [None, "packaged"]}}


def _weights_study(
    url: str, base_weights: str | None, optim: dict[str, Any], space: dict[str, Any]
) -> list[StudyConfig]:
    """The study as read from its file, and as a worker reads it back from the storage ``study create`` made."""
    trainer = {"model": {"encoder": "mobilenet_v2", "encoder_weights": base_weights}, "optim": optim}
    config = StudyConfig.from_dict({"name": "weights", "n_trials": 4, "trainer": trainer, "space": space}, source="t")
    assert (
        create_study(config, url)[1] and create_study(config, url)[1] is False
    )  # the same file loads the study it made
    stored = load_study("weights", url)[1]
    assert stored == config
    return [config, stored]


def _schedule(cfg: TrainConfig) -> dict[str, int]:
    return {"freeze_epochs": cfg.optim.freeze_epochs, "warmup_epochs": cfg.optim.warmup_epochs}


@pytest.mark.parametrize("base_weights", [None, "packaged"])
def test_a_trial_gets_the_schedule_defaults_of_its_own_encoder_weights(
    sqlite_url: str, base_weights: str | None
) -> None:
    for config in _weights_study(sqlite_url, base_weights, {"lr": 0.01}, WEIGHTS_SPACE):
        assert _schedule(config.base_config) == dict(PRETRAINED_SCHEDULE if base_weights else SCRATCH_SCHEDULE)
        for weights, defaults in ((None, SCRATCH_SCHEDULE), ("packaged", PRETRAINED_SCHEDULE)):
            trial = optuna.trial.FixedTrial({"model.encoder_weights": weights})
            cfg = sample(trial, config.space, config.base_config)
            assert cfg.model.encoder_weights == weights and _schedule(cfg) == dict(defaults)
            assert cfg.optim.lr == 0.01


@pytest.mark.parametrize("base_weights", [None, "packaged"])
def test_a_schedule_value_of_the_study_file_holds_for_every_trial(sqlite_url: str, base_weights: str | None) -> None:
    for config in _weights_study(sqlite_url, base_weights, {"warmup_epochs": 0}, WEIGHTS_SPACE):
        for weights, defaults in ((None, SCRATCH_SCHEDULE), ("packaged", PRETRAINED_SCHEDULE)):
            cfg = sample(optuna.trial.FixedTrial({"model.encoder_weights": weights}), config.space, config.base_config)
            assert _schedule(cfg) == {"freeze_epochs": defaults["freeze_epochs"], "warmup_epochs": 0}


def test_a_searched_schedule_value_wins_over_the_defaults_of_the_trials_weights(sqlite_url: str) -> None:
    space = {**WEIGHTS_SPACE, "optim.freeze_epochs": {"low": 0, "high": 5}}
    for config in _weights_study(sqlite_url, None, {}, space):
        trial = optuna.trial.FixedTrial({"model.encoder_weights": "packaged", "optim.freeze_epochs": 1})
        cfg = sample(trial, config.space, config.base_config)
        assert _schedule(cfg) == {"freeze_epochs": 1, "warmup_epochs": PRETRAINED_SCHEDULE["warmup_epochs"]}


def test_a_study_stored_by_an_older_version_still_matches_its_file_without_encoder_weights_in_the_space(
    sqlite_url: str,
) -> None:
    """Older versions stored the base's resolved schedule; that is what is stored still when every trial has the
    base's weights, so ``study create`` of the same file loads such a study rather than refusing it."""
    raw = {
        "name": "s",
        "n_trials": 2,
        "trainer": {"epochs": 3},
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    config = StudyConfig.from_dict(raw, source="t")
    study = create_study(config, sqlite_url)[0]
    study.set_user_attr(CONFIG_ATTR, {**config.model_dump(mode="json"), "storage": None})  # as older versions did
    assert create_study(config, sqlite_url)[1] is False
    # With encoder_weights searched, only what the file gave is stored.
    searched = _weights_study(sqlite_url, None, {"warmup_epochs": 1}, WEIGHTS_SPACE)[0]
    assert searched.to_dict()["trainer"]["optim"].keys() & set(SCRATCH_SCHEDULE) == {"warmup_epochs"}
