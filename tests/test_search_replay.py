"""The search replay (benchmarks/curves): the table's statistics by hand, the replay against the real worker
loop, and asynchronous simulated workers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.curves import configs, strategies
from benchmarks.curves.replay import ReplayRunner, simulate
from benchmarks.curves.table import Curve, Table, load_table

SPACE: dict[str, dict[str, Any]] = {
    "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
    "loss.kind": {"choices": ["bce", "focal"]},
    "loss.edge_lambda": {"low": 0.0, "high": 0.5},
}


def _curve(seed: int, final: float, epochs: int, seconds: float = 2.0) -> Curve:
    """A rising curve that ends at ``final``: epoch e (1-based) scores final * e / epochs."""
    iou = tuple(round(final * (e + 1) / epochs, 6) for e in range(epochs))
    return Curve(seed, iou, iou, (seconds,) * epochs)


def _table(epochs: int = 6) -> Table:
    """Nine configurations on a grid: quality rises with lr towards 1e-3 and with bce; two seeds each."""
    configs_: dict[str, dict[str, Any]] = {}
    curves: dict[str, list[Curve]] = {}
    for i, lr in enumerate((1.0e-4, 1.0e-3, 1.0e-2)):
        for j, (kind, lam) in enumerate((("bce", 0.1), ("focal", 0.1), ("bce", 0.4))):
            cid = f"c{i}{j}"
            configs_[cid] = {"optim.lr": lr, "loss.kind": kind, "loss.edge_lambda": lam}
            base = 0.5 + 0.2 * (lr == 1.0e-3) + 0.1 * (kind == "bce") + 0.05 * j
            curves[cid] = [_curve(0, base, epochs), _curve(1, base + 0.02 * (1 + i), epochs, seconds=3.0)]
    return Table(configs_, curves, SPACE)


def test_true_means_sigma_and_good_set_by_hand() -> None:
    t = Table(
        {"a": {}, "b": {}, "c": {}},
        {
            "a": [_curve(0, 0.80, 3), _curve(1, 0.84, 3)],
            "b": [_curve(0, 0.81, 3), _curve(1, 0.81, 3)],
            "c": [_curve(0, 0.70, 3), _curve(1, 0.74, 3)],
        },
        {},
    )
    assert t.true_mean["a"] == pytest.approx(0.82)
    # Deviations from each mean: a ±0.02, b 0, c ±0.02, over 3 degrees of freedom.
    assert t.seed_sigma == pytest.approx(math.sqrt(4 * 0.02**2 / 3))
    assert t.best == "a"
    assert t.good == {"a", "b"}  # 0.81 >= 0.82 - 0.0231; 0.72 is not
    assert t.regret("c") == pytest.approx(0.10)
    assert t.top(1) == {"a"} and t.top(2) == {"a", "b"} and t.top(5) == {"a", "b", "c"}  # means 0.82, 0.81, 0.72


def test_nearest_scales_ranges_and_counts_a_differing_choice_as_one() -> None:
    t = _table()
    assert t.nearest({"optim.lr": 1.0e-3, "loss.kind": "bce", "loss.edge_lambda": 0.1}) == "c10"
    # lr 3e-3 is nearer to 1e-3 than to 1e-2 in log space (0.24 against 0.26 of the range).
    assert t.nearest({"optim.lr": 3.0e-3, "loss.kind": "bce", "loss.edge_lambda": 0.1}) == "c10"
    assert t.nearest({"optim.lr": 4.0e-3, "loss.kind": "bce", "loss.edge_lambda": 0.1}) == "c20"
    # A choice outweighs any range: focal at lambda 0.4 still goes to the focal configuration (lambda 0.1).
    assert t.nearest({"optim.lr": 1.0e-3, "loss.kind": "focal", "loss.edge_lambda": 0.4}) == "c11"


def test_load_table_reads_record_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [
        {
            "id": "x",
            "seed": 1,
            "params": {"optim.lr": 1e-3},
            "val_iou": [0.1, 0.3],
            "val_boundary_iou": [0, 0.1],
            "seconds": [1.0, 1.0],
        },
        {
            "id": "x",
            "seed": 0,
            "params": {"optim.lr": 1e-3},
            "val_iou": [0.2, 0.4],
            "val_boundary_iou": [0, 0.2],
            "seconds": [1.0, 2.0],
        },
        {
            "id": "y",
            "seed": 0,
            "params": {"optim.lr": 1e-2},
            "val_iou": [0.5],
            "val_boundary_iou": [0.1],
            "seconds": [1.0],
        },
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    t = load_table(path, {"optim.lr": SPACE["optim.lr"]})
    assert [c.seed for c in t.curves["x"]] == [0, 1]
    assert t.true_mean["x"] == pytest.approx(0.35)
    assert set(t.complete_only(2).curves) == {"x"}


def _study_config(name: str, seed: int, pruner: dict[str, Any] | None = None) -> Any:
    from edgesearch.searcher.study.config import StudyConfig

    trainer = configs.trainer_config(configs.BASE, root="", seed=0, epochs=6)
    trainer["data"] = {k: v for k, v in trainer["data"].items() if k != "root"}
    raw: dict[str, Any] = {
        "name": name,
        "n_trials": 1000,
        "trainer": trainer,
        "space": SPACE,
        "sampler": {"kind": "tpe", "seed": seed},
    }
    if pruner is not None:
        raw["pruner"] = pruner
    return StudyConfig.from_dict(raw, source="test")


@pytest.mark.slow
def test_simulated_worker_gives_the_real_worker_loops_trials_back(tmp_path: Path) -> None:
    """The same study (edgesearch's sampler and stage-aware median pruner, 3 start-up trials) run by the
    real worker loop on SQLite with ReplayRunner, and by the simulation at one worker: trial for trial."""
    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.study.studies import create_study, make_pruner, make_sampler

    table = _table()
    pruner = {"kind": "median", "n_startup_trials": 3}
    config = _study_config("exact", 3, pruner).model_copy(update={"n_trials": 14})
    url = f"sqlite:///{tmp_path / 's.db'}"
    create_study(config, url)
    run_worker("exact", url, runs_dir=tmp_path / "runs", poll_seconds=0.05, trial_runner=ReplayRunner(table, 5))
    real = optuna.load_study(study_name="exact", storage=url).get_trials(deepcopy=False)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config), pruner=make_pruner(config))
    finished = sorted(simulate(table, config, study, workers=1, seed=5, n_trials=14).finished, key=lambda f: f.number)
    simulated = study.get_trials(deepcopy=False)
    assert len(real) == len(simulated) == len(finished) == 14
    assert any(t.state == TrialState.PRUNED for t in real)  # the pruner had a say
    for t, s, f in zip(real, simulated, finished, strict=True):
        assert (t.number, t.state, t.params, t.value) == (s.number, s.state, s.params, s.value)
        assert t.intermediate_values == s.intermediate_values
        assert t.user_attrs["replayed"] == s.user_attrs["replayed"] == {"config": f.config_id, "seed": f.seed}
        assert len(t.intermediate_values) == f.epochs


def _unpruned() -> optuna.Study:
    sampler = optuna.samplers.RandomSampler(seed=0)
    return optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.NopPruner())


def test_a_complete_trial_is_its_best_epoch_and_the_clock_adds_recorded_seconds() -> None:
    table = _table()
    config = _study_config("clock", 0, {"kind": "none"})
    study = _unpruned()
    sim = simulate(table, config, study, workers=1, seed=1, n_trials=3)
    clock = 0.0
    for f in sim.finished:
        curve = next(c for c in table.curves[f.config_id] if c.seed == f.seed)
        assert f.state == TrialState.COMPLETE and f.value == max(curve.val_iou)
        assert f.start == pytest.approx(clock)
        clock += sum(curve.seconds)
        assert f.end == pytest.approx(clock)


def test_workers_run_at_once_and_the_budget_stops_new_trials() -> None:
    """Four workers start four trials at second 0; none starts at or after the budget, and a trial that would
    end past it is left out."""
    table = _table()
    config = _study_config("async", 0, {"kind": "none"})
    study = _unpruned()
    sim = simulate(table, config, study, workers=4, seed=2, budget_seconds=40.0)
    assert sorted(f.start for f in sim.finished)[:4] == [0.0] * 4
    assert all(f.start < 40.0 and f.end <= 40.0 for f in sim.finished)
    # 6 epochs of 2 or 3 s: each worker finishes 2 or 3 trials within 40 s.
    assert 8 <= len(sim.finished) <= 12
    running = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    assert len(running) == 4  # one unfinished trial per worker when the clock ran out


def test_a_pruned_trial_stops_at_the_epoch_its_pruner_says() -> None:
    """Optuna's plain MedianPruner, no start-up trials: once a trial is complete, a worse trial stops at
    its first epoch below the median, which the replay reports as PRUNED with that many epochs."""
    table = _table()
    config = _study_config("prune", 0)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=4),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
    )
    sim = simulate(table, config, study, workers=1, seed=0, n_trials=12)
    pruned = [f for f in sim.finished if f.state == TrialState.PRUNED]
    assert pruned
    for f in pruned:
        assert f.value is None and 1 <= f.epochs < 6
        assert f.end - f.start == pytest.approx(
            sum(next(c for c in table.curves[f.config_id] if c.seed == f.seed).seconds[: f.epochs])
        )


def test_every_strategy_builds_a_study() -> None:
    for name, settings in strategies.STRATEGIES.items():
        config = strategies.study_config("s", settings, seed=0)
        if not settings.get("top_k"):
            study = strategies.make_study("s", settings, config, seed=0)
            assert study.direction == optuna.study.StudyDirection.MAXIMIZE, name


def test_designed_effects_are_paired_differences_by_hand() -> None:
    """Curves whose best value is 0.8 + 0.01 [report's schedule] + 0.02 lambda + 0.001 width + 0.003 seed:
    the paired effects are those terms back, their standard errors the spread of the cells' differences."""
    from benchmarks.curves import designed

    points = configs.designed()
    curves = {}
    for cid, p in points.items():
        report = all(p[k] == v for k, v in configs.SCHEDULES["report's schedule"].items())
        value = 0.8 + 0.01 * report + 0.02 * p["loss.edge_lambda"] + 0.001 * p["loss.edge_width"]
        curves[cid] = [_curve(seed, value + 0.003 * seed, 30) for seed in (0, 1)]
    got = designed.effects(Table(points, curves, configs.SPACE))
    schedules = got["schedule (against all from epoch 1)"]
    assert schedules["report's schedule"]["effect"] == pytest.approx(0.01)
    assert schedules["report's schedule"]["cells"] == 10 and schedules["report's schedule"]["se"] == pytest.approx(0)
    assert schedules["frozen first"]["effect"] == pytest.approx(0.0)
    lam = got["edge lambda (against 0)"]["0.3"]
    # 12 cells (4 schedules x widths 1-3) against lambda 0 at width 2: 0.006 + 0.001 (w - 2).
    assert lam["cells"] == 12 and lam["effect"] == pytest.approx(0.006)
    assert lam["se"] == pytest.approx(math.sqrt(8 * 0.001**2 / 11) / math.sqrt(12))
    width = got["edge width (against 2)"]["3"]
    assert width["cells"] == 12 and width["effect"] == pytest.approx(0.001) and width["se"] == pytest.approx(0)
    # Early: the best within 10 epochs of curves rising linearly to their value over 30.
    early = designed.effects(Table(points, curves, configs.SPACE), epochs=10)
    report = early["schedule (against all from epoch 1)"]["report's schedule"]
    assert report["effect"] == pytest.approx(0.01 / 3, abs=1e-5)
    # Boundary IoU (here the same curves): lambdas against 0 at width 2 only, one cell per schedule; no widths.
    boundary = designed.effects(Table(points, curves, configs.SPACE), metric="val_boundary_iou")
    assert boundary["edge lambda (against 0)"]["0.3"] == {
        "effect": pytest.approx(0.006),
        "se": pytest.approx(0),
        "cells": 4,
    }
    assert "edge width (against 2)" not in boundary


def test_random_block_levels_are_means_and_standard_errors_by_hand() -> None:
    from benchmarks.curves import designed

    def point(factor: float, optimiser: str, weights: str | None) -> dict[str, Any]:
        return {"optim.backbone_lr_factor": factor, "optim.name": optimiser, "model.encoder_weights": weights}

    points = {
        "r0": point(0.1, "adam", "packaged"),
        "r1": point(0.3, "adam", "packaged"),
        "r2": point(0.6, "rmsprop", "packaged"),
        "r3": point(1.0, "rmsprop", "packaged"),
        "r4": point(0.1, "rmsprop", None),  # scratch: left out of the backbone factor's levels
        "d0": point(0.1, "adam", "packaged"),  # designed: not in the random block
    }
    means = {"r0": 0.80, "r1": 0.82, "r2": 0.84, "r3": 0.86, "r4": 0.70, "d0": 0.0}
    curves = {cid: [_curve(0, m - 0.01, 3), _curve(1, m + 0.01, 3)] for cid, m in means.items()}
    got = designed.random_levels(Table(points, curves, configs.SPACE))
    factor = got["backbone lr factor, pretrained"]
    assert factor["0.05-0.2"] == {"mean": pytest.approx(0.80), "se": None, "n": 1}
    assert factor["0.5-1"] == {"mean": pytest.approx(0.85), "se": pytest.approx(0.01), "n": 2}  # sd 0.0141 / sqrt 2
    assert got["optimiser"]["adam"]["mean"] == pytest.approx(0.81)
    assert got["optimiser"]["rmsprop"]["mean"] == pytest.approx((0.84 + 0.86 + 0.70) / 3)
    assert got["encoder"]["scratch"] == {"mean": pytest.approx(0.70), "se": None, "n": 1}
