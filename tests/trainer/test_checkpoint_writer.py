"""Checkpoints written behind the training loop: the cadence, the snapshot, the writes that always happen."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from edgesearch.errors import UserError
from edgesearch.trainer import Callback, TrainConfig, train
from edgesearch.trainer.callbacks import StopForGood
from edgesearch.trainer.checkpoint_files import load_checkpoint
from edgesearch.trainer.checkpoint_writer import Checkpointer, to_host

SMALL = {"data": {"image_size": 32, "synthetic": {"n_images": 24}}}


def _state(value: float) -> dict[str, Any]:
    return {"epoch": int(value), "model": {"w": torch.full((4,), value)}, "history": [{"epoch": int(value)}]}


def test_to_host_copies_every_tensor_so_training_can_change_them() -> None:
    original = {"a": [torch.ones(3), (torch.zeros(2), 5)], "b": "text"}
    copied = to_host(original)
    original["a"][0].add_(1)
    original["a"][1][0].add_(1)
    assert torch.equal(copied["a"][0], torch.ones(3)) and torch.equal(copied["a"][1][0], torch.zeros(2))
    assert copied["b"] == "text" and copied["a"][1][1] == 5


def test_snapshots_reuse_their_buffers_but_never_the_one_being_written(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path / "last.pt", tmp_path / "best.pt", interval=3600)
    checkpoints.epoch_end(_state(1))
    first = checkpoints._snapshot
    assert first is not None
    buffer = first["model"]["w"]
    checkpoints.epoch_end(_state(2))
    assert checkpoints._snapshot["model"]["w"] is buffer and buffer[0] == 2  # copied in place: no new memory

    checkpoints._writing = (checkpoints._snapshot, None)  # as if a background write held it
    checkpoints.epoch_end(_state(3))
    assert checkpoints._snapshot["model"]["w"] is not buffer and checkpoints._snapshot["model"]["w"][0] == 3
    assert buffer[0] == 2  # the copy being written is left alone
    checkpoints._writing = (None, None)
    checkpoints.close()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 3


def test_interval_zero_writes_after_every_epoch(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path / "last.pt", tmp_path / "best.pt", interval=0)
    for epoch in (1, 2, 3):
        checkpoints.improved({"w": torch.full((4,), float(epoch))})
        checkpoints.epoch_end(_state(epoch))
        checkpoints._join()  # the write of this epoch is done before the next one starts anyway
        assert load_checkpoint(tmp_path / "last.pt")["epoch"] == epoch
        assert load_checkpoint(tmp_path / "best.pt")["w"][0] == epoch
    checkpoints.close()


def test_a_long_interval_writes_nothing_until_close_and_then_the_latest_epoch(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path / "last.pt", tmp_path / "best.pt", interval=3600)
    state = _state(1)
    checkpoints.improved(state["model"])
    checkpoints.epoch_end(state)
    state["model"]["w"].add_(100)  # training goes on changing the tensors in place
    checkpoints.epoch_end(_state(2))
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()
    checkpoints.close()
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["w"], torch.ones(4))  # the copy, not the tensor


def test_a_failed_background_write_is_raised_in_the_training_thread(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    checkpoints = Checkpointer(gone / "last.pt", gone / "best.pt", interval=0)
    checkpoints.epoch_end(_state(1))
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.epoch_end(_state(2))


class _StopDuring(Callback):
    """Raises in the middle of epoch ``epoch`` (1-based), like a stop request or a crash at a batch."""

    class Stop(Exception):
        pass

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_batch_end(self, *, epoch: int, step: int, loss: torch.Tensor) -> None:
        if epoch + 1 == self.epoch:
            raise self.Stop


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_writes_the_last_whole_epoch_whatever_the_interval(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = tiny_config(epochs=4, checkpoint_interval=3600, **SMALL)
    with pytest.raises(_StopDuring.Stop):
        train(config, run_dir=tmp_path / "run", callbacks=[_StopDuring(3)])
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert saved["epoch"] == 2 and [row["epoch"] for row in saved["history"]] == [1, 2]
    assert (tmp_path / "run" / "best.pt").is_file()

    resumed = train(config, run_dir=tmp_path / "run", resume_from=tmp_path / "run" / "last.pt")
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 4


@pytest.mark.slow
def test_a_whole_run_writes_best_and_last_at_the_end(tiny_config: Callable[..., TrainConfig], tmp_path: Path) -> None:
    result = train(tiny_config(epochs=2, checkpoint_interval=3600, **SMALL), run_dir=tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
    assert result.best_checkpoint == tmp_path / "run" / "best.pt" and result.best_checkpoint.is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_a_skipped_last_is_never_written_but_the_best_weights_are(tmp_path: Path) -> None:
    checkpoints = Checkpointer(tmp_path / "last.pt", tmp_path / "best.pt", interval=3600)
    checkpoints.improved({"w": torch.ones(4)})
    checkpoints.epoch_end(_state(1))
    checkpoints.skip_last()
    checkpoints.close()
    assert not (tmp_path / "last.pt").exists()
    assert torch.equal(load_checkpoint(tmp_path / "best.pt")["w"], torch.ones(4))


@pytest.mark.slow
@pytest.mark.parametrize("interval", [0, 3600])
def test_a_finished_run_without_last_at_end_leaves_no_last_pt_of_its_end(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path, interval: float
) -> None:
    result = train(
        tiny_config(epochs=2, checkpoint_interval=interval, **SMALL), run_dir=tmp_path / "run", last_at_end=False
    )
    assert result.best_checkpoint == tmp_path / "run" / "best.pt" and result.best_checkpoint.is_file()
    last = tmp_path / "run" / "last.pt"
    # Every epoch but the last is written on the cadence 0; nothing is written for the end.
    if interval == 0:
        assert load_checkpoint(last)["epoch"] == 1
    else:
        assert not last.exists()


class _StopAfter(Callback):
    """Raises ``error`` at the end of epoch ``epoch`` (1-based), as the pruning callback does."""

    def __init__(self, epoch: int, error: Exception) -> None:
        self.epoch, self.error = epoch, error

    def on_epoch_end(self, record: Any) -> None:
        if record["epoch"] == self.epoch:
            raise self.error


class _Pruned(StopForGood):
    pass


@pytest.mark.slow
def test_a_run_stopped_for_good_writes_best_but_no_last_while_any_other_stop_writes_both(
    tiny_config: Callable[..., TrainConfig], tmp_path: Path
) -> None:
    config = tiny_config(epochs=3, checkpoint_interval=3600, **SMALL)
    with pytest.raises(_Pruned):
        train(config, run_dir=tmp_path / "pruned", callbacks=[_StopAfter(2, _Pruned())])
    assert (tmp_path / "pruned" / "best.pt").is_file() and not (tmp_path / "pruned" / "last.pt").exists()
    with pytest.raises(RuntimeError):
        train(config, run_dir=tmp_path / "failed", callbacks=[_StopAfter(2, RuntimeError("crash"))])
    assert load_checkpoint(tmp_path / "failed" / "last.pt")["epoch"] == 2
