from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from edgesearch.trainer import Callback, TrainConfig, train
from edgesearch.trainer.checkpoint_files import load_checkpoint
from edgesearch.trainer.data import build_datasets
from edgesearch.trainer.loop import seed_everything
from edgesearch.trainer.model import build_model
from tests.helpers import merge

HISTORY_KEYS = {"epoch", "stage", "train_loss", "val_loss", "val_iou", "val_boundary_iou", "val_edge_corr", "lrs"}
# Mechanics tests need no learning: 32 px and few images keep an epoch well under a second.
SMALL = {"data": {"image_size": 32, "synthetic": {"n_images": 24}}}
PATCHES = {"data": {"image_size": None, "patch_size": 32, "synthetic": {"n_images": 12, "size": 56}}}
"""Native-resolution patches of 32 px cut from 56-px images, validated whole by sliding window."""


class _StopAfter(Callback):
    """Simulates a crash after a given epoch, once its checkpoints are written."""

    class Stop(Exception):
        pass

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        if record["epoch"] == self.epoch:
            raise self.Stop


@pytest.mark.slow
def test_three_epochs_on_synthetic_data_learn_and_write_the_run_dir(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    # Three epochs from a random encoder learn the shapes surely without augmentation (best IoU 0.72-0.81
    # over seeds 0-2); with flips, turns and brightness they reach only 0.42-0.59 by epoch 3.
    config = tiny_config(data={"augment": False})
    run_dir = tmp_path / "run"
    result = train(config, run_dir=run_dir)

    ious = [row["val_iou"] for row in result.history]
    assert len(ious) == 3
    # An all-background prediction has IoU 0 against masks that all contain objects.
    _, val = build_datasets(config.data, model=config.model, seed=config.seed)
    assert all(val[i][1].sum() > 0 for i in range(len(val)))
    assert ious[-1] > ious[0] + 0.15, ious
    assert max(ious) == result.best_val_iou
    assert result.best_val_iou > 0.5

    for name in ("config.json", "history.json", "best.pt", "last.pt", "curves.png", "edges.png"):
        assert (run_dir / name).is_file(), name
    assert TrainConfig.model_validate(json.loads((run_dir / "config.json").read_text())) == config
    history = json.loads((run_dir / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(row.keys() >= HISTORY_KEYS for row in history)
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model = build_model(config.model)
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    assert result.best_checkpoint == run_dir / "best.pt"


# Stopped after epoch 2 (inside stage 2), and after epoch 1: the last frozen epoch, whose last.pt
# holds a head-only optimizer that the encoder joins at the next epoch.
@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "data"),
    [(2, SMALL), (1, SMALL), (2, PATCHES)],
    ids=["in-stage-2", "at-the-stage-boundary", "patches-in-stage-2"],
)
def test_resume_from_last_continues_at_next_epoch_with_identical_state(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, stop: int, data: dict[str, Any]
) -> None:
    config = tiny_config(epochs=3, **data)
    assert config.optim.freeze_epochs == 1
    straight = train(config, run_dir=tmp_path / "straight")

    with pytest.raises(_StopAfter.Stop):
        train(config, run_dir=tmp_path / "crashed", callbacks=[_StopAfter(stop)])
    saved = load_checkpoint(tmp_path / "crashed" / "last.pt")
    assert saved["epoch"] == stop
    assert saved["optimizer"]["state"], "the optimizer state is saved"

    starts: list[int] = []

    class _Record(Callback):
        def on_train_start(self, *, epochs: int, start_epoch: int, steps_per_epoch: int) -> None:
            starts.append(start_epoch)

    resumed = train(
        config, run_dir=tmp_path / "crashed", resume_from=tmp_path / "crashed" / "last.pt", callbacks=[_Record()]
    )
    assert starts == [stop]
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3]
    # Epoch 3 of the resumed run equals epoch 3 of an uninterrupted one, weights, Adam moments and all.
    assert resumed.history[-1]["val_iou"] == straight.history[-1]["val_iou"]
    final_resumed = load_checkpoint(tmp_path / "crashed" / "last.pt")
    final_straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    for name, tensor in final_straight["model"].items():
        torch.testing.assert_close(final_resumed["model"][name], tensor, rtol=0, atol=0, msg=name)
    for key, state in final_straight["optimizer"]["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(final_resumed["optimizer"]["state"][key][name], value, rtol=0, atol=0)


@pytest.mark.slow
def test_stage_one_leaves_the_encoder_unchanged_and_stage_two_adds_it_with_lower_lr(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = tiny_config(epochs=3, optim={"freeze_epochs": 2, "backbone_lr_factor": 0.25, "warmup_epochs": 0}, **SMALL)
    seed_everything(config.seed)
    initial = {k: v.clone() for k, v in build_model(config.model).state_dict().items()}

    with pytest.raises(_StopAfter.Stop):
        train(config, run_dir=tmp_path / "run", callbacks=[_StopAfter(1)])
    after_stage1 = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    encoder_keys = [k for k in initial if k.startswith("encoder.")]
    head_keys = [k for k in initial if not k.startswith("encoder.") and initial[k].is_floating_point()]
    for key in encoder_keys:  # weights and BatchNorm statistics alike
        assert torch.equal(initial[key], after_stage1[key]), key
    assert any(not torch.equal(initial[k], after_stage1[k]) for k in head_keys)

    result = train(config, run_dir=tmp_path / "run", resume_from=tmp_path / "run" / "last.pt")
    lrs = [row["lrs"] for row in result.history]
    assert [set(group) for group in lrs] == [{"head"}, {"head"}, {"head", "backbone"}]
    assert lrs[2]["backbone"] == pytest.approx(0.25 * lrs[2]["head"])
    assert [row["stage"] for row in result.history] == [1, 1, 2]
    after_stage2 = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert any(not torch.equal(initial[k], after_stage2[k]) for k in encoder_keys if initial[k].is_floating_point())


@pytest.mark.slow
def test_a_last_pt_written_before_a_setting_existed_resumes_with_its_default(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    train(tiny_config(epochs=1, **SMALL), run_dir=tmp_path / "run")
    last = tmp_path / "run" / "last.pt"
    state = load_checkpoint(last)
    del state["config"]["data"]["mask_suffix"]  # as a version without data.mask_suffix saved it
    torch.save(state, last)
    result = train(tiny_config(epochs=2, **SMALL), run_dir=tmp_path / "run", resume_from=last)
    assert [row["epoch"] for row in result.history] == [1, 2]


@pytest.mark.slow
def test_train_without_run_dir_writes_nothing(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    result = train(tiny_config(epochs=1, **SMALL), run_dir=None)
    assert result.best_checkpoint is None
    assert len(result.history) == 1


@pytest.mark.slow
def test_train_on_an_image_folder(tiny_config: Callable[..., TrainConfig], image_folder: Path, tmp_path: Path) -> None:
    result = train(tiny_config(epochs=1, data={"root": str(image_folder)}), run_dir=tmp_path / "run")
    assert 0.0 <= result.history[0]["val_iou"] <= 1.0


def test_the_soft_edge_profile_changes_the_validation_loss_but_not_the_metrics(
    tiny_config: Callable[..., TrainConfig],
) -> None:
    """Boundary IoU and the edge correlation stay on the hard band for every profile, so studies
    can compare profiles by them; only the loss sees the profile."""
    from edgesearch.trainer.data import build_loader
    from edgesearch.trainer.epoch import EpochRunner

    loss = {"edge_lambda": 0.5, "edge_width": 3}
    hard = tiny_config(**SMALL, loss={**loss, "edge_profile": "hard"})
    soft = tiny_config(**SMALL, loss={**loss, "edge_profile": "soft"})
    seed_everything(0)
    model = build_model(hard.model)
    _, val = build_datasets(hard.data, model=hard.model, seed=0)
    loader = build_loader(val, hard.data, train=False)
    device = torch.device("cpu")
    results = [
        EpochRunner.build(config, model, device=device, steps_per_epoch=1).validate(loader) for config in (hard, soft)
    ]
    for key in ("val_iou", "val_boundary_iou", "val_edge_corr"):
        assert results[0][key] == results[1][key], key
    assert results[0]["val_loss"] != pytest.approx(results[1]["val_loss"])


@pytest.mark.slow
def test_training_with_the_soft_edge_profile_learns(tiny_config: Callable[..., TrainConfig]) -> None:
    config = tiny_config(loss={"edge_lambda": 0.3, "edge_width": 3, "edge_profile": "soft"})
    result = train(config)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    assert result.history[-1]["val_iou"] > 0.3


@pytest.mark.slow
def test_loader_processes_cut_the_same_patches(tiny_config: Callable[..., TrainConfig]) -> None:
    """Two loader processes hold their own copy of the dataset; the epoch reaches them in each index."""
    data = merge(PATCHES["data"], {"augment": False, "num_workers": 0})
    alone = train(tiny_config(epochs=2, data=data))
    loaders = train(tiny_config(epochs=2, data={**data, "num_workers": 2}))
    for a, b in zip(alone.history, loaders.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_iou"] == pytest.approx(b["val_iou"], rel=1e-6)


@pytest.mark.slow
def test_the_result_holds_the_best_epochs_model_with_or_without_a_run_folder(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    """The returned model is the best epoch's, not the last one's: at this lr no epoch beats the first."""
    config = tiny_config(epochs=3, optim={"lr": 0.03}, **SMALL)
    kept = train(config, run_dir=tmp_path / "run")
    alone = train(config)
    assert kept.best_epoch == alone.best_epoch == 1
    assert kept.model is not None and alone.model is not None and not alone.model.training
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    assert any(not torch.equal(best[name], last[name]) for name in best)
    for name, tensor in best.items():
        torch.testing.assert_close(kept.model.state_dict()[name].cpu(), tensor, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(alone.model.state_dict()[name].cpu(), tensor, rtol=0, atol=0, msg=name)
