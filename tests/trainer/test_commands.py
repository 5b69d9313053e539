"""``edgesearch train`` from the command line: a real run, and bad input -> exit 2, one line."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from edgesearch.cli import app
from edgesearch.cli.train_progress import RichProgress
from tests.helpers import TINY, TINY_TRAINER, epoch_record, merge, write_folder

runner = CliRunner()


def _write_config(path: Path, trainer: dict[str, object], *, study: bool = True) -> Path:
    body = {"name": "t", "trainer": trainer} if study else trainer
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.slow
def test_train_command_runs_and_reports_each_epoch(tmp_path: Path) -> None:
    small = merge(TINY, {"data": {"image_size": 32, "synthetic": {"n_images": 24}}, "epochs": 2})
    config = _write_config(tmp_path / "study.yaml", small)
    out_dir = tmp_path / "run"
    result = runner.invoke(app, ["train", str(config), "--out", str(out_dir), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "epoch   1/2" in result.stdout and "epoch   2/2" in result.stdout
    assert "val IoU" in result.stdout and "lr head" in result.stdout
    assert "best val IoU" in result.stdout
    assert {p.name for p in out_dir.iterdir()} >= {"config.json", "history.json", "best.pt", "last.pt", "curves.png"}


def test_each_epoch_line_gives_its_seconds_and_the_runs_eta() -> None:
    console = Console(file=io.StringIO(), width=200)
    with RichProgress(console=console) as progress:
        progress.on_train_start(epochs=3, start_epoch=0, steps_per_epoch=1)
        for epoch, seconds in ((1, 10.0), (2, 20.0), (3, 15.0)):
            progress.on_epoch_end(epoch_record(epoch, seconds))
    # ETA: epochs left x the mean epoch so far: 2 x 10 s, then 1 x 15 s; none after the last.
    head = "stage 1  loss 0.3000  val IoU 0.5000  boundary IoU 0.2000  edge corr +0.100  lr head 1.0e-03"
    assert [line for line in console.file.getvalue().splitlines() if line.strip()] == [
        f"epoch   1/3 {head}  10.0 s/epoch  ETA 20s",
        f"epoch   2/3 {head}  20.0 s/epoch  ETA 15s",
        f"epoch   3/3 {head}  15.0 s/epoch",
    ]


@pytest.mark.slow
def test_train_command_accepts_a_bare_trainer_config_and_epochs_override(tmp_path: Path) -> None:
    small = merge(TINY, {"data": {"image_size": 32, "synthetic": {"n_images": 24}}, "epochs": 5})
    config = _write_config(tmp_path / "trainer.yaml", small, study=False)
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert "epoch   1/1" in result.stdout


@pytest.mark.slow
def test_train_command_says_how_many_images_each_split_has(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n=6)
    for mask in (data / "masks").iterdir():
        mask.rename(mask.with_name(f"{mask.stem}_mask.png"))
    small = merge(TINY, {"data": {"image_size": 32, "batch_size": 2, "mask_suffix": "_mask"}, "epochs": 1})
    config = _write_config(tmp_path / "trainer.yaml", small, study=False)
    result = runner.invoke(app, ["train", str(config), "--data", str(data), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert f"data: 5 train + 1 val images from {data}\n" in result.stdout
    shapes = merge(TINY, {"data": {"image_size": 32, "synthetic": {"n_images": 10}}, "epochs": 1})
    synthetic = runner.invoke(
        app, ["train", str(_write_config(tmp_path / "s.yaml", shapes)), "--out", str(tmp_path / "s")]
    )
    assert synthetic.exit_code == 0, synthetic.output
    assert "data: 8 train + 2 val images from synthetic shapes\n" in synthetic.stdout


def _bad_trainer(change: dict[str, object]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        return [str(_write_config(tmp / "study.yaml", merge(TINY, change)))]

    return make


def _bad_folder(damage: Callable[[Path], None]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        root = write_folder(tmp / "data", n=4)
        damage(root)
        return [str(_write_config(tmp / "study.yaml", TINY)), "--data", str(root)]

    return make


def _extra_mask(root: Path) -> None:
    Image.new("L", (64, 64)).save(root / "masks" / "orphan.png")


def _garbage_image(root: Path) -> None:
    (root / "images" / "img01.png").write_bytes(b"this is not a png")


def _small_mask(root: Path) -> None:
    Image.new("L", (48, 64)).save(root / "masks" / "img02.png")


def _empty(root: Path) -> None:
    for sub in ("images", "masks"):
        for path in (root / sub).iterdir():
            path.unlink()


def _grey_mask(root: Path) -> None:
    Image.linear_gradient("L").resize((64, 64)).save(root / "masks" / "img03.png")


BAD_INPUTS = {
    "unknown key": (_bad_trainer({"loss": {"lamda": 0.1}}), ["trainer.loss.lamda", "unknown key"]),
    "negative lambda": (
        _bad_trainer({"loss": {"edge_lambda": -0.1}}),
        ["trainer.loss.edge_lambda", "-0.1", "0.0 <= x <= 1.0"],
    ),
    "image side": (_bad_trainer({"data": {"image_size": 100}}), ["trainer.data.image_size", "multiple of 32"]),
    "bad device": (_bad_trainer({"device": "gpu"}), ["trainer.device", "cpu, cuda"]),
    "mask without image": (_bad_folder(_extra_mask), ["orphan.png", "mask without an image"]),
    "unreadable image": (_bad_folder(_garbage_image), ["img01.png", "unreadable image"]),
    "mask size": (_bad_folder(_small_mask), ["img02.png", "48x64", "64x64"]),
    "empty folder": (_bad_folder(_empty), ["empty"]),
    "grey mask": (_bad_folder(_grey_mask), ["img03.png", "not binary"]),
    "missing file": (lambda tmp: [str(tmp / "nope.yaml")], ["nope.yaml", "not found"]),
    "malformed yaml": (
        lambda tmp: [str((tmp / "x.yaml").write_text("trainer: {model: [") and tmp / "x.yaml")],
        ["x.yaml", "malformed YAML", "line 1"],
    ),
    "missing data folder": (
        lambda tmp: [str(_write_config(tmp / "s.yaml", TINY)), "--data", str(tmp / "nodata")],
        ["nodata", "no such folder"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing(case: str, tmp_path: Path) -> None:
    make_args, expected = BAD_INPUTS[case]
    out_dir = tmp_path / "out"
    result = runner.invoke(app, ["train", *make_args(tmp_path), "--out", str(out_dir)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out_dir.exists()


def test_a_non_empty_out_folder_is_refused(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("x")
    result = runner.invoke(app, ["train", str(_write_config(tmp_path / "s.yaml", TINY)), "--out", str(out_dir)])
    assert result.exit_code == 2
    assert "not empty" in result.stderr
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_console_script_reports_bad_input_without_traceback(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "study.yaml", merge(TINY, {"optim": {"name": "sgd"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "edgesearch", "train", str(config), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "trainer.optim.name" in proc.stderr and "adam" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_resume_with_other_loss_or_optim_settings_is_refused_unless_forced(tmp_path: Path) -> None:
    small = merge(TINY, {"data": {"image_size": 32, "synthetic": {"n_images": 16}}, "epochs": 1})
    run = tmp_path / "run"
    first = runner.invoke(app, ["train", str(_write_config(tmp_path / "a.yaml", small)), "--out", str(run)])
    assert first.exit_code == 0, first.output
    changed = _write_config(tmp_path / "b.yaml", merge(small, {"loss": {"kind": "focal"}, "optim": {"lr": 1.0e-4}}))
    resume = ["train", str(changed), "--out", str(run), "--resume", str(run / "last.pt"), "--epochs", "2"]
    before = (run / "last.pt").read_bytes()

    refused = runner.invoke(app, resume)
    assert refused.exit_code == 2, refused.output
    for fragment in ("loss.kind: 'bce' -> 'focal'", "optim.lr: 0.003 -> 0.0001", "--force"):
        assert fragment in refused.stderr
    assert (run / "last.pt").read_bytes() == before  # nothing trained, nothing written

    longer = runner.invoke(
        app, ["train", str(tmp_path / "a.yaml"), "--out", str(run), "--resume", str(run / "last.pt")]
    )
    assert longer.exit_code == 2 and "already has 1 epochs" in longer.stderr  # same config: epochs may grow, not stay
    forced = runner.invoke(app, [*resume, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "resuming after epoch 1" in forced.stdout and "epoch   2/2" in forced.stdout


def _best_of_the_past(last: Path, *, epoch: int) -> None:
    """Make ``last.pt`` say that its best epoch was ``epoch``, with an IoU of 1.0 that no later epoch beats."""
    import torch

    state = torch.load(last, weights_only=True)
    state["best_val_iou"], state["best_epoch"] = 1.0, epoch
    torch.save(state, last)


def _tensors(path: Path) -> dict[str, object]:
    import torch

    return {key: value.tolist() for key, value in torch.load(path, weights_only=True).items()}


@pytest.mark.slow
def test_a_resumed_run_ends_with_a_best_pt_and_names_it_however_its_epochs_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path / "t.yaml", merge(TINY_TRAINER, {"epochs": 2}))
    run = tmp_path / "run"
    assert runner.invoke(app, ["train", str(config), "--out", str(run)]).exit_code == 0
    _best_of_the_past(run / "last.pt", epoch=2)
    shutil.copytree(run, tmp_path / "copy")
    best = _tensors(run / "best.pt")

    # No --out: the run goes on in the folder of its last.pt, whose best.pt stays the best.
    here = runner.invoke(app, ["train", str(config), "--resume", str(run / "last.pt"), "--epochs", "3"])
    assert here.exit_code == 0, here.output
    assert f"at epoch 2; model: {run / 'best.pt'}; run directory: {run}" in here.stdout
    assert _tensors(run / "best.pt") == best and not (tmp_path / "runs").exists()

    # Into a new folder: the best weights come along.
    new = tmp_path / "new"
    moved = runner.invoke(
        app, ["train", str(config), "--resume", str(tmp_path / "copy" / "last.pt"), "--out", str(new), "--epochs", "3"]
    )
    assert moved.exit_code == 0, moved.output
    assert f"at epoch 2; model: {new / 'best.pt'}" in moved.stdout
    assert _tensors(new / "best.pt") == best

    # A last.pt without its best.pt: the best is chosen again among the epochs trained now.
    (tmp_path / "copy" / "best.pt").unlink()
    alone = runner.invoke(app, ["train", str(config), "--resume", str(tmp_path / "copy" / "last.pt"), "--epochs", "3"])
    assert alone.exit_code == 0, alone.output
    assert f"at epoch 3; model: {tmp_path / 'copy' / 'best.pt'}" in alone.stdout
    assert "no best.pt beside it" in caplog.text


@pytest.mark.slow
def test_resuming_into_another_runs_folder_is_refused_and_leaves_both_runs_as_they_were(tmp_path: Path) -> None:
    config = _write_config(tmp_path / "t.yaml", TINY_TRAINER)
    a, b = tmp_path / "a", tmp_path / "b"
    for run in (a, b):
        assert runner.invoke(app, ["train", str(config), "--out", str(run)]).exit_code == 0
    before = {run: {p.name: p.read_bytes() for p in run.iterdir()} for run in (a, b)}

    result = runner.invoke(
        app, ["train", str(config), "--resume", str(a / "last.pt"), "--out", str(b), "--epochs", "2"]
    )
    assert result.exit_code == 2, result.output
    assert f"--out {b}: folder is not empty" in result.stderr and str(a) in result.stderr
    assert {run: {p.name: p.read_bytes() for p in run.iterdir()} for run in (a, b)} == before


@pytest.mark.slow
def test_sigterm_stops_train_at_a_batch_with_whole_checkpoints_and_the_run_resumes(tmp_path: Path) -> None:
    import os
    import signal
    import time

    import torch

    slow = merge(TINY, {"data": {"image_size": 64, "synthetic": {"n_images": 48}}, "epochs": 3})
    config = _write_config(tmp_path / "slow.yaml", slow)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "edgesearch", "train", str(config), "--out", str(run), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (run / "history.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the first epoch ended: signal during the second (its last.pt is not written yet)
    assert not (run / "last.pt").exists()  # the default cadence writes last.pt every 60 s, and on the stop
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stdout + stderr
    assert "SIGTERM" in stderr and f"--resume {run / 'last.pt'}" in stderr and "Traceback" not in stderr
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []
    saved = torch.load(run / "last.pt", weights_only=True)
    assert 1 <= saved["epoch"] < 3

    resumed = runner.invoke(app, ["train", str(config), "--out", str(run), "--resume", str(run / "last.pt")])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming after epoch {saved['epoch']}" in resumed.stdout and "epoch   3/3" in resumed.stdout
    assert os.path.getsize(run / "best.pt") > 0


@pytest.mark.slow
def test_markup_in_the_data_and_run_paths_is_printed_as_it_is(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "q[/b]", size=32)
    out_dir = tmp_path / "o[bold]x"
    config = _write_config(tmp_path / "t.yaml", TINY_TRAINER)
    result = runner.invoke(app, ["train", str(config), "--data", str(data), "--out", str(out_dir)])
    assert result.exit_code == 0, result.output
    assert f"on folder {data}, resized to 32px" in result.stdout
    assert f"model: {out_dir / 'best.pt'}; run directory: {out_dir}" in result.stdout
