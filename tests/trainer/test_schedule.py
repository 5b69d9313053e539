"""Warmup, staged unfreezing and the plateau tracker, against torch and hand-computed lrs."""

from __future__ import annotations

import pytest
import torch

from edgesearch.trainer.config import OptimConfig
from edgesearch.trainer.schedule import Plateau, StagedSchedule, add_backbone_group, build_optimizer

LR = 1e-3
SEQUENCES = [
    [0.1, 0.2, 0.3, 0.3, 0.3, 0.3, 0.25, 0.31, 0.31, 0.30, 0.29, 0.5, 0.5, 0.5, 0.5, 0.5],
    [0.5, 0.4, 0.3, 0.2, 0.6, 0.60001, 0.6, 0.7, 0.1, 0.1, 0.8, 0.8, 0.79, 0.81, 0.81, 0.81],
    [0.0, 0.0, 0.0, 0.2, 0.2, 0.2, 0.20001, 0.2001, 0.2, 0.19, 0.18, 0.9, 0.95, 0.95, 0.94, 0.96],
]


def _cfg(**kwargs: float) -> OptimConfig:
    base: dict[str, float] = {
        "lr": LR,
        "warmup_epochs": 2,
        "freeze_epochs": 3,
        "backbone_lr_factor": 0.5,
        "plateau_patience": 0,
        "plateau_factor": 0.5,
    }
    base.update(kwargs)
    return OptimConfig.model_validate(base)


# --- Plateau vs ReduceLROnPlateau --------------------------------------------------------------


@pytest.mark.parametrize("patience", [0, 1, 2])
@pytest.mark.parametrize("factor", [0.5, 0.3])
@pytest.mark.parametrize("sequence", SEQUENCES)
def test_plateau_agrees_with_reduce_lr_on_plateau(patience: int, factor: float, sequence: list[float]) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    torch_sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=patience, factor=factor)
    plateau = Plateau(patience=patience, factor=factor)
    for i, metric in enumerate(sequence):
        before = opt.param_groups[0]["lr"]
        cut = plateau.step(metric)
        torch_sched.step(metric)
        after = opt.param_groups[0]["lr"]
        assert plateau.scale == pytest.approx(after, rel=1e-12), (i, metric)
        assert cut == (after < before), (i, metric)
        assert plateau.num_bad_epochs == torch_sched.num_bad_epochs, (i, metric)
        assert plateau.best == torch_sched.best, (i, metric)


def test_plateau_cuts_after_more_than_patience_bad_epochs() -> None:
    plateau = Plateau(patience=2, factor=0.5)
    cuts = [plateau.step(0.5) for _ in range(7)]
    assert cuts == [False, False, False, True, False, False, True]
    assert plateau.scale == 0.25


# --- StagedSchedule lrs ------------------------------------------------------------------------


def test_staged_schedule_lrs_by_hand() -> None:
    sched = StagedSchedule(_cfg(), steps_per_epoch=4)
    # Stage 1, epochs 0..2: head only, warmup over 2 epochs x 4 steps = 8 steps.
    for epoch in range(3):
        assert sched.stage(epoch) == 1
        for step in range(4):
            lrs = sched.lrs(epoch, step)
            assert set(lrs) == {"head"}
            k = epoch * 4 + step
            assert lrs["head"] == pytest.approx(LR * min(1.0, (k + 1) / 8), rel=1e-12)
    assert sched.lrs(0, 0)["head"] == pytest.approx(LR / 8)
    assert sched.lrs(1, 3)["head"] == pytest.approx(LR)
    # Stage 2 from epoch 3: the backbone joins at half the head lr and the warmup restarts.
    for epoch in range(3, 7):
        assert sched.stage(epoch) == 2
        for step in range(4):
            lrs = sched.lrs(epoch, step)
            assert set(lrs) == {"head", "backbone"}
            k = (epoch - 3) * 4 + step
            assert lrs["head"] == pytest.approx(LR * min(1.0, (k + 1) / 8), rel=1e-12)
            assert lrs["backbone"] == pytest.approx(0.5 * lrs["head"], rel=1e-12)
    assert sched.lrs(3, 0) == pytest.approx({"head": LR / 8, "backbone": LR / 16})
    assert sched.lrs(4, 3) == pytest.approx({"head": LR, "backbone": LR / 2})


def test_staged_schedule_without_freeze_has_one_stage_with_both_groups() -> None:
    sched = StagedSchedule(_cfg(freeze_epochs=0), steps_per_epoch=4)
    assert sched.stage(0) == 2
    assert sched.lrs(0, 0) == pytest.approx({"head": LR / 8, "backbone": LR / 16})
    assert sched.lrs(2, 0) == pytest.approx({"head": LR, "backbone": LR / 2})


def test_staged_schedule_without_warmup_starts_at_full_lr() -> None:
    sched = StagedSchedule(_cfg(warmup_epochs=0), steps_per_epoch=4)
    assert sched.lrs(0, 0) == pytest.approx({"head": LR})
    assert sched.lrs(3, 0) == pytest.approx({"head": LR, "backbone": LR / 2})


def test_staged_schedule_rejects_zero_steps_per_epoch() -> None:
    with pytest.raises(ValueError, match="steps_per_epoch"):
        StagedSchedule(_cfg(), steps_per_epoch=0)


# --- plateau inside the staged schedule --------------------------------------------------------


def test_flat_metric_during_warmup_epochs_causes_no_cut() -> None:
    sched = StagedSchedule(_cfg(warmup_epochs=3, freeze_epochs=5), steps_per_epoch=4)
    assert sched.end_epoch(0, 0.5) is False
    assert sched.end_epoch(1, 0.5) is False
    assert sched.plateau.scale == 1.0
    assert sched.plateau.best == float("-inf")  # the tracker never saw the warmup epochs
    assert sched.plateau.num_bad_epochs == 0


def test_plateau_ignores_every_epoch_that_ramps_the_lr() -> None:
    # warmup_epochs=1: epochs 0 and 3 (the first of each stage) ramp the lr from lr/4 up to lr,
    # so neither is evidence of a plateau (schedule.py: "an epoch spent ramping up is not
    # evidence of a plateau"; the schedule: ReduceLROnPlateau runs "after each warmup").
    sched = StagedSchedule(_cfg(warmup_epochs=1, freeze_epochs=3), steps_per_epoch=4)
    assert sched.lrs(0, 0)["head"] < LR
    assert sched.lrs(3, 0)["head"] < LR
    sched.end_epoch(0, 0.9)
    assert sched.plateau.best == float("-inf"), "the warmup epoch 0 was fed to the plateau tracker"
    assert sched.end_epoch(1, 0.8) is False
    assert sched.end_epoch(2, 0.9) is False
    # The backbone just unfroze and IoU dips during the ramp: no cut.
    assert sched.end_epoch(3, 0.5) is False, "the warmup epoch 3 of stage 2 cut the lr"
    assert sched.plateau.scale == 1.0


def test_plateau_cut_survives_the_next_warmup() -> None:
    sched = StagedSchedule(_cfg(warmup_epochs=2, freeze_epochs=4), steps_per_epoch=4)
    assert sched.end_epoch(0, 0.5) is False  # warmup epoch, ignored
    assert sched.end_epoch(1, 0.6) is False
    assert sched.end_epoch(2, 0.7) is False  # a new best
    assert sched.end_epoch(3, 0.7) is True  # flat with patience 0: cut
    assert sched.plateau.scale == 0.5
    cut_lr = 0.5 * LR
    # Stage 2 ramps up to the cut lr, not to the base lr.
    assert sched.lrs(4, 0) == pytest.approx({"head": cut_lr / 8, "backbone": cut_lr / 16})
    assert sched.lrs(5, 3) == pytest.approx({"head": cut_lr, "backbone": cut_lr / 2})
    assert sched.lrs(6, 2) == pytest.approx({"head": cut_lr, "backbone": cut_lr / 2})
    for step in range(4):
        assert sched.lrs(4, step)["head"] <= cut_lr


# --- optimizer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop)])
def test_build_optimizer_returns_named_groups(name: str, cls: type[torch.optim.Optimizer]) -> None:
    head = [torch.nn.Parameter(torch.zeros(3))]
    backbone = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))]
    cfg = _cfg(name=name, weight_decay=0.01)  # type: ignore[arg-type]
    opt = build_optimizer(cfg, {"head": head})
    assert type(opt) is cls
    assert [g["name"] for g in opt.param_groups] == ["head"]
    assert opt.param_groups[0]["weight_decay"] == 0.01
    both = build_optimizer(cfg, {"head": head, "backbone": backbone})
    assert type(both) is cls
    assert [g["name"] for g in both.param_groups] == ["head", "backbone"]
    assert both.param_groups[1]["params"] == backbone


def test_schedule_apply_sets_each_group_lr() -> None:
    sched = StagedSchedule(_cfg(), steps_per_epoch=4)
    head = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_optimizer(sched.cfg, {"head": head})
    sched.apply(opt, 0, 1)
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * 2 / 8)

    backbone = [torch.nn.Parameter(torch.zeros(2))]
    add_backbone_group(opt, backbone, sched.cfg)
    assert [g["name"] for g in opt.param_groups] == ["head", "backbone"]
    assert opt.param_groups[1]["lr"] == pytest.approx(LR * 0.5)
    assert opt.param_groups[1]["params"] == backbone
    for epoch, step in [(3, 0), (3, 2), (4, 3), (5, 1)]:
        sched.apply(opt, epoch, step)
        expected = sched.lrs(epoch, step)
        assert {g["name"]: g["lr"] for g in opt.param_groups} == expected


# --- state --------------------------------------------------------------------------------------


def test_schedule_state_dict_round_trip_preserves_the_plateau() -> None:
    sched = StagedSchedule(_cfg(plateau_patience=2, freeze_epochs=20), steps_per_epoch=4)
    for epoch, metric in enumerate([0.3, 0.5, 0.6, 0.6, 0.6, 0.6, 0.55]):
        sched.end_epoch(epoch, metric)
    state = sched.state_dict()
    assert sched.plateau.scale < 1.0
    assert sched.plateau.num_bad_epochs > 0

    fresh = StagedSchedule(_cfg(plateau_patience=2, freeze_epochs=20), steps_per_epoch=4)
    fresh.load_state_dict(state)
    assert fresh.plateau.scale == sched.plateau.scale
    assert fresh.plateau.best == sched.plateau.best
    assert fresh.plateau.num_bad_epochs == sched.plateau.num_bad_epochs
    assert fresh.lrs(6, 3) == sched.lrs(6, 3)
    # And both continue identically.
    assert fresh.end_epoch(7, 0.6) == sched.end_epoch(7, 0.6)
    assert fresh.plateau.state_dict() == sched.plateau.state_dict()


def test_plateau_state_dict_round_trip() -> None:
    plateau = Plateau(patience=1, factor=0.5)
    for metric in [0.4, 0.4, 0.4, 0.3]:
        plateau.step(metric)
    other = Plateau(patience=1, factor=0.5)
    other.load_state_dict(plateau.state_dict())
    assert other.state_dict() == plateau.state_dict() == {"scale": 0.5, "best": 0.4, "num_bad_epochs": 1}
