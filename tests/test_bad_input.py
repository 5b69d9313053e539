"""Bad input anywhere exits 2 with a message naming the file, field or value and what is allowed.

The README's exit codes: 2 means bad input (a bad file, field, option, data folder, storage URL or
study name); the message is a few lines on stderr, never a traceback, and nothing is written
before the error: not to the storage, not to an output folder, not to the artifact folder.

Each case builds its inputs under the test's temporary folder (which is also the working folder,
so a default path such as ``./edgesearch.db`` or ``./runs`` would be caught too) and names the
strings its message must contain. ``{tmp}`` in an expected string stands for that folder. No case
trains: every one must fail before training starts.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from edgesearch.cli import app
from tests.helpers import TINY_TRAINER, merge, write_folder, write_page_stack

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

DB = "s.db"
KNOWN = "known"
"""The study that cases needing an existing study find in the storage."""

TRAINER: dict[str, Any] = merge(
    TINY_TRAINER, {"data": {"image_size": 64, "batch_size": 4, "synthetic": {"n_images": 8}}}
)
STUDY: dict[str, Any] = {
    "name": KNOWN,
    "n_trials": 2,
    "sampler": {"kind": "random", "seed": 0},
    "pruner": {"kind": "none"},
    "trainer": TRAINER,
    "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "loss.kind": {"choices": ["bce", "focal"]}},
}


@dataclass(frozen=True)
class Case:
    """One bad input: ``build(tmp)`` writes what the command reads and returns its arguments."""

    id: str
    build: Callable[[Path], list[str]]
    expect: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    """Strings the message must not hold (advice that would be unsafe to follow)."""


# --------------------------------------------------------------------------- input builders


def url(tmp: Path) -> str:
    return f"sqlite:///{tmp}/{DB}"


def write_yaml(path: Path, raw: Any) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def study_file(tmp: Path, **top: Any) -> Path:
    """``study.yaml``: a valid study file with some top-level keys replaced (``None`` removes a key)."""
    raw = {key: value for key, value in {**STUDY, **top}.items() if value is not None}
    return write_yaml(tmp / "study.yaml", raw)


def trainer_file(tmp: Path, **parts: Any) -> Path:
    """A valid bare trainer config with some parts merged in (``{"optim": {"lr": -1}}``)."""
    raw = {key: dict(value) if isinstance(value, dict) else value for key, value in TRAINER.items()}
    for key, value in parts.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return write_yaml(tmp / "trainer.yaml", raw)


def text_file(tmp: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def known_study(tmp: Path) -> None:
    """Create study ``known`` (no trials) in the case's storage, as ``study create`` would."""
    from edgesearch.cli.options import quiet_optuna
    from edgesearch.searcher.storage._optuna.handles import rdb_storage
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study

    quiet_optuna()
    study, _ = create_study(StudyConfig.from_dict(STUDY, source="test"), url(tmp))
    # Closed now, so SQLite folds its write-ahead log into the file before the case's "before"
    # snapshot, not whenever the garbage collector gets to the connections during the command.
    rdb_storage(study).engine.dispose()  # type: ignore[union-attr]


PARETO = "pareto"
"""A study of two objectives that cases about ``--pick`` find in the storage."""


def known_pareto(tmp: Path) -> None:
    """Create study ``pareto`` (metric [val_iou, val_boundary_iou], no trials) in the case's storage."""
    from edgesearch.cli.options import quiet_optuna
    from edgesearch.searcher.storage._optuna.handles import rdb_storage
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study

    quiet_optuna()
    raw = {**STUDY, "name": PARETO, "metric": ["val_iou", "val_boundary_iou"]}
    study, _ = create_study(StudyConfig.from_dict(raw, source="test"), url(tmp))
    rdb_storage(study).engine.dispose()  # type: ignore[union-attr]


GRID_OF_A_BILLION: dict[str, Any] = {
    "loss.edge_width": {"low": 1, "high": 64},
    "epochs": {"low": 1, "high": 1000},
    "seed": {"low": 0, "high": 15624},
}
"""A grid sampler's space of 64 x 1,000 x 15,625 = 1,000,000,000 points, each range well within its own limit."""


def stored_billion_grid(tmp: Path) -> None:
    """Study ``known`` whose stored config holds :data:`GRID_OF_A_BILLION`, as an older edgesearch stored it."""
    import optuna

    from edgesearch.searcher.storage._optuna.handles import rdb_storage
    from edgesearch.searcher.study.studies import CONFIG_ATTR

    known_study(tmp)
    study = optuna.load_study(study_name=KNOWN, storage=url(tmp))
    raw = {**study.user_attrs[CONFIG_ATTR], "sampler": {"kind": "grid", "seed": 0}, "space": GRID_OF_A_BILLION}
    study.set_user_attr(CONFIG_ATTR, raw)
    rdb_storage(study).engine.dispose()  # type: ignore[union-attr]


def known_with_finished(tmp: Path) -> None:
    """Study ``known`` (n_trials 2) with its two trials finished and none running."""
    import optuna

    from edgesearch.searcher.storage._optuna.handles import rdb_storage

    known_study(tmp)
    study = optuna.load_study(study_name=KNOWN, storage=url(tmp))
    for _ in range(2):
        study.tell(study.ask(), 0.5)
    rdb_storage(study).engine.dispose()  # type: ignore[union-attr]


def known_with_removed_best(tmp: Path) -> None:
    """Study ``known`` whose best trial lost its best.pt to ``keep_checkpoints`` (a stale view of the study)."""
    import optuna

    from edgesearch.searcher.storage._optuna.handles import rdb_storage
    from edgesearch.searcher.study.run_folders import CHECKPOINT_REMOVED_ATTR

    known_study(tmp)
    study = optuna.load_study(study_name=KNOWN, storage=url(tmp))
    trial = study.ask()
    trial.set_user_attr("config", TRAINER)
    trial.set_user_attr("best_checkpoint", f"{tmp}/runs/trial-00000/best.pt")
    trial.set_user_attr(CHECKPOINT_REMOVED_ATTR, "keep_checkpoints 1: only the best 1 finished trial(s) keep theirs")
    study.tell(trial, 0.5)
    rdb_storage(study).engine.dispose()  # type: ignore[union-attr]


def study_create(**top: Any) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["study", "create", str(study_file(tmp, **top)), "--storage", url(tmp)]

    return build


def study_create_text(text: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["study", "create", str(text_file(tmp, text)), "--storage", url(tmp)]

    return build


def train(**parts: Any) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        return ["train", str(trainer_file(tmp, **parts)), "--out", str(tmp / "out")]

    return build


def train_on(change: Callable[[Path], None], **parts: Any) -> Callable[[Path], list[str]]:
    """``train --data DIR`` on a six-pair folder that ``change`` breaks (``parts`` as for :func:`trainer_file`)."""

    def build(tmp: Path) -> list[str]:
        data = write_folder(tmp / "data")
        change(data)
        return ["train", str(trainer_file(tmp, **parts)), "--data", str(data), "--out", str(tmp / "out")]

    return build


def foreign_database(tmp: Path) -> None:
    """``s.db``: somebody else's SQLite database (not Optuna's), in rollback-journal mode."""
    with contextlib.closing(sqlite3.connect(tmp / DB)) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        connection.execute("INSERT INTO notes (text) VALUES ('keep me')")
        connection.commit()


def on_foreign(*args: str) -> Callable[[Path], list[str]]:
    """A read-only command pointed at somebody else's SQLite database."""

    def build(tmp: Path) -> list[str]:
        foreign_database(tmp)
        return [arg.replace("{tmp}", str(tmp)) for arg in args] + ["--storage", url(tmp)]

    return build


def on_fifo(*args: str) -> Callable[[Path], list[str]]:
    """A command whose storage path is a FIFO: SQLite would wait on it forever."""

    def build(tmp: Path) -> list[str]:
        os.mkfifo(tmp / "pipe.db")
        return [arg.replace("{tmp}", str(tmp)) for arg in args] + ["--storage", f"sqlite:///{tmp}/pipe.db"]

    return build


def on_known(*args: str) -> Callable[[Path], list[str]]:
    """A command run on a storage that holds study ``known``; ``{tmp}`` in args is the folder."""

    def build(tmp: Path) -> list[str]:
        known_study(tmp)
        return [arg.replace("{tmp}", str(tmp)) for arg in args] + ["--storage", url(tmp)]

    return build


def plain(*args: str) -> Callable[[Path], list[str]]:
    """Fixed arguments with placeholders: ``{tmp}`` the case's folder, ``{storage}`` its SQLite URL,
    ``{study}`` a valid study file and ``{trainer}`` a valid trainer config (written when named)."""

    def build(tmp: Path) -> list[str]:
        joined = " ".join(args)
        values = {"{tmp}": str(tmp), "{storage}": url(tmp)}
        if "{study}" in joined:
            values["{study}"] = str(study_file(tmp))
        if "{trainer}" in joined:
            values["{trainer}"] = str(trainer_file(tmp))
        expanded = []
        for arg in args:
            for key, value in values.items():
                arg = arg.replace(key, value)
            expanded.append(arg)
        return expanded

    return build


def after(setup: Callable[[Path], object], build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    """``build`` once ``setup`` has prepared the case's folder."""

    def combined(tmp: Path) -> list[str]:
        setup(tmp)
        return build(tmp)

    return combined


def train_text(text: str) -> Callable[[Path], list[str]]:
    """``train trainer.yaml --out {tmp}/out`` where the file holds ``text``."""

    def build(tmp: Path) -> list[str]:
        return ["train", str(text_file(tmp, text, "trainer.yaml")), "--out", str(tmp / "out")]

    return build


def folder(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).mkdir()


def non_empty_folder(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).mkdir()
        (tmp / name / "keep.txt").write_text("written before the command; must stay as it is")

    return setup


def plain_file(name: str) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / name).write_text("a file where a folder is expected")

    return setup


def one_image(tmp: Path) -> None:
    write_folder(tmp / "data", n=1)


def predict_with_checkpoint(
    *extra: str, missing_input: bool = False, out: str = "masks", weights: Callable[[Path], None] | None = None
) -> Callable[[Path], list[str]]:
    """``predict --checkpoint`` with a run folder (config.json + best.pt) and one input image; ``weights``
    writes best.pt (by default a file the command must stop before it reads)."""

    def build(tmp: Path) -> list[str]:
        image = tmp / "nope.png" if missing_input else write_folder(tmp / "data", n=1) / "images" / "img00.png"
        return predict_args(tmp, image, TRAINER, *extra, out=out, weights=weights)

    return build


def predict_args(
    tmp: Path,
    image: Path,
    trainer: dict[str, Any],
    *extra: str,
    out: str = "masks",
    weights: Callable[[Path], None] | None = None,
) -> list[str]:
    """``predict IMAGE --checkpoint`` of a run folder whose config.json is ``trainer``; ``weights`` writes
    its best.pt (by default a file the command must stop before it reads)."""
    run = tmp / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(trainer))
    if weights is None:
        (run / "best.pt").write_bytes(b"not a checkpoint: the command must stop before it reads it")
    else:
        weights(run / "best.pt")
    return ["predict", str(image), "--checkpoint", str(run / "best.pt"), "--out", str(tmp / out), *extra]


def predict_on(make: Callable[[Path], Path], **parts: Any) -> Callable[[Path], list[str]]:
    """``predict`` of the image ``make(tmp)`` writes, with a config of :data:`TRAINER` and ``parts`` merged in."""

    def build(tmp: Path) -> list[str]:
        return predict_args(tmp, make(tmp), merge(TRAINER, parts))

    return build


def export_with_checkpoint(
    *extra: str, out: str = "model.onnx", weights: Callable[[Path], None] | None = None
) -> Callable[[Path], list[str]]:
    """``export-model --checkpoint`` of a run folder (config.json + best.pt) as :func:`predict_args` makes it."""

    def build(tmp: Path) -> list[str]:
        predict_args(tmp, tmp / "unused.png", TRAINER, weights=weights)
        return ["export-model", "--checkpoint", str(tmp / "run" / "best.pt"), "--out", str(tmp / out), *extra]

    return build


def an_older_export(tmp: Path) -> None:
    (tmp / "model.onnx").write_bytes(b"an earlier export: must stay as it is")


def tiny_onnx(path: Path, *, channels: int = 3, metadata: dict[str, str] | None = None) -> Path:
    """A small valid ONNX graph, (N, ``channels``, H, W) -> (N, 1, H, W) probabilities (a 1x1 convolution and a
    sigmoid), with ``metadata`` as its ``metadata_props``: somebody else's model, or one with edited metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((1, channels, 1, 1), 0.5, np.float32), "weight")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["p"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", channels, "h", "w"])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(model, str(path))
    return path


def exported_metadata(trainer: dict[str, Any], **changes: str | None) -> dict[str, str]:
    """The metadata ``export-model`` writes for ``trainer``'s model, with ``changes`` (None removes a key)."""
    from edgesearch.trainer import TrainConfig
    from edgesearch.trainer.input_stats import model_normalization
    from edgesearch.trainer.onnx_metadata import metadata_of

    config = TrainConfig.model_validate(trainer)
    mean, std = model_normalization(config.model)
    props = metadata_of(config, mean=mean, std=std, stride=32, source="run/best.pt")
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del props[key]
        else:
            props[key] = value
    return props


def predict_onnx(
    *extra: str, model: Callable[[Path], object] | None = None, trainer: dict[str, Any] = TRAINER, **changes: str | None
) -> Callable[[Path], list[str]]:
    """``predict --onnx {tmp}/model.onnx`` of one image, the file made by ``model(path)`` (default: a tiny graph
    with the metadata of ``trainer``'s model, ``changes`` made as in :func:`exported_metadata`)."""

    def build(tmp: Path) -> list[str]:
        image = write_folder(tmp / "data", n=1) / "images" / "img00.png"
        path = tmp / "model.onnx"
        if model is not None:
            model(path)
        else:
            tiny_onnx(path, metadata=exported_metadata(trainer, **changes))
        return ["predict", "--onnx", str(path), str(image), "--out", str(tmp / "masks"), *extra]

    return build


def unsafe_pickle(path: Path) -> None:
    """A torch file holding an object that a weights-only load refuses (a harmless ``datetime.date``)."""
    torch.save({"model": datetime.date(2020, 1, 1)}, path)


def resnet18_encoder_state_at(name: str) -> Callable[[Path], None]:
    """A real encoder's state dict (resnet18's), which fits no other encoder by name or by order."""

    def write(tmp: Path) -> None:
        import segmentation_models_pytorch as smp
        import torch

        torch.save(smp.encoders.get_encoder("resnet18", weights=None).state_dict(), tmp / name)

    return write


def unsafe_pickle_at(name: str) -> Callable[[Path], None]:
    return lambda tmp: unsafe_pickle(tmp / name)


def other_run(tmp: Path) -> None:
    """``a/last.pt``, the run to resume, and ``b``: the files of another run."""
    (tmp / "a").mkdir()
    (tmp / "a" / "last.pt").write_bytes(b"the command must stop before it reads this")
    (tmp / "b").mkdir()
    for name in ("config.json", "history.json", "best.pt", "last.pt"):
        (tmp / "b" / name).write_text(f"{name} of run b: must stay as it is")


def users_own_report_files(tmp: Path) -> None:
    """``report/``: a folder of the user's own files that happen to have the report's names."""
    (tmp / "report").mkdir()
    (tmp / "report" / "report.html").write_text("<p>my own report</p>")
    (tmp / "report" / "importances.png").write_bytes(b"my own picture")


def dangling_link(name: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / name).symlink_to(tmp / "nowhere")


# --------------------------------------------------------------------------- data breakers


def drop(path: str) -> Callable[[Path], None]:
    return lambda data: (data / path).unlink()


def corrupt(path: str) -> Callable[[Path], None]:
    def change(data: Path) -> None:
        (data / path).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")

    return change


def small_mask(data: Path) -> None:
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "masks" / "img02.png")


def gradient_mask(data: Path) -> None:
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    Image.fromarray(ramp).save(data / "masks" / "img03.png")


def emptied(data: Path) -> None:
    for sub in ("images", "masks"):
        for file in (data / sub).iterdir():
            file.unlink()


def one_pair(data: Path) -> None:
    for i in range(1, 6):
        (data / "images" / f"img{i:02d}.png").unlink()
        (data / "masks" / f"img{i:02d}.png").unlink()


def twin_stem(data: Path) -> None:
    Image.open(data / "images" / "img00.png").save(data / "images" / "img00.jpg")


def nan_pixel(data: Path) -> None:
    """Replace images/img02.png by a float TIFF of it (0..1) with one value NaN."""
    image = np.asarray(Image.open(data / "images" / "img02.png")).astype(np.float32) / 255.0
    image[3, 4, 0] = np.nan
    (data / "images" / "img02.png").unlink()
    tifffile.imwrite(data / "images" / "img02.tif", image, photometric="rgb")


def nan_tiff(tmp: Path) -> Path:
    image = np.zeros((64, 64, 3), np.float32)
    image[0, 0] = np.nan
    tifffile.imwrite(tmp / "nan.tif", image, photometric="rgb")
    return tmp / "nan.tif"


def symlink(name: str, target: str) -> Callable[[Path], None]:
    """images/``name`` becomes a symbolic link to ``target`` (itself: a loop; a missing name: broken)."""

    def change(data: Path) -> None:
        (data / "images" / name).symlink_to(target)
        Image.open(data / "masks" / "img00.png").save(data / "masks" / name)

    return change


def masks_named(suffix: str) -> Callable[[Path], None]:
    def change(data: Path) -> None:
        for mask in (data / "masks").iterdir():
            mask.rename(mask.with_name(f"{mask.stem}{suffix}{mask.suffix}"))

    return change


def unpaired_and_corrupt(data: Path) -> None:
    (data / "masks" / "img01.png").unlink()
    corrupt("images/img02.png")(data)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "masks" / "img03.png")


def page_stack(data: Path) -> None:
    """images/img02.png becomes a TIFF of 30 pages of 2000x2000: 120 MB decoded, 0.1 MB on disk."""
    (data / "images" / "img02.png").unlink()
    write_page_stack(data / "images" / "img02.tif", pages=30, side=2000)


def val_without_masks(data: Path) -> None:
    (data / "train").mkdir()
    for sub in ("images", "masks"):
        (data / sub).rename(data / "train" / sub)
    (data / "val" / "images").mkdir(parents=True)


# --------------------------------------------------------------------------- the cases

SPACE = STUDY["space"]

CASES = [
    # ---- study files (edgesearch study create FILE)
    Case(
        "study-file-missing",
        plain("study", "create", "{tmp}/nope.yaml", "--storage", "{storage}"),
        ("{tmp}/nope.yaml", "file not found"),
    ),
    Case(
        "study-malformed-yaml",
        study_create_text("name: broken\nspace: {loss.edge_lambda: {low: 0.0, high: 0.5}\n"),
        ("study.yaml", "malformed YAML", "line"),
    ),
    Case(
        "study-top-level-list",
        study_create_text("- name: a\n- n_trials: 3\n"),
        ("study.yaml", "expected a mapping", "list"),
    ),
    Case(
        "study-duplicate-yaml-key",
        study_create_text(yaml.safe_dump(STUDY, sort_keys=False) + "n_trials: 50\n"),
        ("study.yaml", "n_trials", "duplicate key", "line"),
    ),
    Case("study-unknown-key", study_create(n_trail=5), ("study.yaml", "n_trail", "unknown key", "n_trials")),
    Case("study-missing-name", study_create(name=None), ("study.yaml", "name", "required", "letters, digits")),
    Case("study-bad-name", study_create(name="a/b"), ("study.yaml", "name", "'a/b'", "letters, digits")),
    Case("study-n-trials-wrong-type", study_create(n_trials="many"), ("study.yaml", "n_trials", "'many'", "x >= 1")),
    Case("study-n-trials-zero", study_create(n_trials=0), ("study.yaml", "n_trials", "0", "x >= 1")),
    # Accepted once, then crashed or ran something else: refused when the file is read.
    Case("study-n-trials-boolean", study_create(n_trials=True), ("study.yaml", "n_trials", "true is a boolean")),
    Case("study-keep-checkpoints-zero", study_create(keep_checkpoints=0), ("study.yaml", "keep_checkpoints", "x >= 1")),
    Case(
        "study-keep-checkpoints-negative",
        study_create(keep_checkpoints=-2),
        ("study.yaml", "keep_checkpoints", "-2", "x >= 1"),
    ),
    Case(
        "study-keep-checkpoints-string",
        study_create(keep_checkpoints="two"),
        ("study.yaml", "keep_checkpoints", "'two'", "x >= 1"),
    ),
    Case(
        "cli-predict-removed-checkpoint",
        after(
            known_with_removed_best,
            plain("predict", "--study", KNOWN, "{tmp}/data", "--out", "{tmp}/masks", "--storage", "{storage}"),
        ),
        (f"study {KNOWN} trial 0", "best.pt was removed", "keep_checkpoints 1", f"study export {KNOWN}"),
    ),
    Case(
        "study-sampler-seed-beyond-numpy",
        study_create(sampler={"kind": "random", "seed": 2**40}),
        ("study.yaml", "sampler.seed", "1099511627776", "0 <= x <= 2147483647"),
    ),
    Case(
        "study-heartbeat-beyond-a-thread-wait",
        study_create(fault_tolerance={"heartbeat_interval": 10**13}),
        ("study.yaml", "fault_tolerance.heartbeat_interval", "1 <= x <= 3600"),
    ),
    Case("study-name-too-long", study_create(name="a" * 300), ("study.yaml", "name", "at most 100 characters")),
    Case(
        "study-space-step-tiny",
        study_create(space={"loss.edge_lambda": {"low": 0.0, "high": 0.5, "step": 1e-30}}),
        ("study.yaml", "space.loss.edge_lambda", "step 1e-30", "1,000,000"),
    ),
    Case(
        "study-grid-of-a-billion-points",
        study_create(sampler={"kind": "grid", "seed": 0}, space=GRID_OF_A_BILLION),
        ("study.yaml", "space", "grid sampler", "1,000,000,000 points", "at most 100,000"),
    ),
    Case(
        "study-show-stored-grid-of-a-billion-points",
        after(stored_billion_grid, plain("study", "show", KNOWN, "--storage", "{storage}")),
        (f"study {KNOWN}", "space", "grid sampler", "1,000,000,000 points", "at most 100,000"),
    ),
    Case(
        "study-name-option-like",
        study_create(name="--help"),
        ("study.yaml", "name", "'--help'", "starting with a letter"),
    ),
    Case("study-name-dash-first", study_create(name="-x"), ("study.yaml", "name", "'-x'", "letter or digit")),
    Case("study-name-dot-first", study_create(name=".hidden"), ("study.yaml", "name", "'.hidden'", "letter or digit")),
    Case("study-integer-of-5000-digits", study_create_text("n_trials: " + "9" * 5000 + "\n"), ("study.yaml", "4300")),
    Case(
        "study-yaml-alias-bomb",
        study_create_text(
            'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True))
        ),
        ("study.yaml", "aliases expand to more than 100,000 values"),
    ),
    Case(
        "study-yaml-nested-50000-deep",
        study_create_text("name: " + "[" * 50_000 + "]" * 50_000 + "\n"),
        ("study.yaml", "line 1", "nested deeper than 64 levels"),
    ),
    Case(
        "study-unknown-metric",
        study_create(metric="accuracy"),
        ("study.yaml", "metric", "'accuracy'", "val_iou"),
    ),
    Case(
        "study-metric-empty-list",
        study_create(metric=[]),
        ("study.yaml", "metric", "[] is not allowed", "[val_iou, val_boundary_iou]"),
    ),
    Case(
        "study-metric-listed-twice",
        study_create(metric=["val_iou", "val_iou"]),
        ("study.yaml", "metric", "['val_iou', 'val_iou']", "[val_iou, val_boundary_iou]"),
    ),
    Case(
        "study-metric-list-unknown-name",
        study_create(metric=["val_iou", "accuracy"]),
        ("study.yaml", "metric", "'accuracy'", "[val_iou, val_boundary_iou]"),
    ),
    Case(
        "study-metric-list-with-pruner",
        study_create(metric=["val_iou", "val_boundary_iou"], pruner={"kind": "median"}),
        ("study.yaml", "pruner.kind", "'median'", "cannot prune", "{kind: none}"),
    ),
    Case(
        "study-metric-list-with-cmaes",
        study_create(metric=["val_iou", "val_boundary_iou"], sampler={"kind": "cmaes"}),
        ("study.yaml", "sampler.kind", "'cmaes'", "two objectives", "tpe, random, grid"),
    ),
    Case(
        "study-space-path-not-a-field",
        study_create(space={"loss.edge_lamda": {"low": 0.0, "high": 0.5}}),
        ("study.yaml", "space.loss.edge_lamda", "not a field", "edge_lambda"),
    ),
    Case(
        "study-space-low-above-high",
        study_create(space={"optim.lr": {"low": 0.1, "high": 0.001}}),
        ("study.yaml", "space.optim.lr", "low 0.1 is above high 0.001", "low <= high"),
    ),
    Case(
        "study-space-lambda-above-1",
        study_create(space={"loss.edge_lambda": {"low": 0.0, "high": 1.5}}),
        ("study.yaml", "space.loss.edge_lambda", "1.5", "<= 1"),
    ),
    Case(
        "study-space-empty",
        study_create(space={}),
        ("study.yaml", "space", "empty", "loss.edge_lambda"),
    ),
    Case(
        "study-space-choice-not-allowed",
        study_create(space={"loss.kind": {"choices": ["bce", "dice"]}}),
        ("study.yaml", "space.loss.kind", "'dice'", "'focal'"),
    ),
    Case(
        "study-space-edge-profile-unknown",
        study_create(space={"loss.edge_profile": {"choices": ["hard", "smooth"]}}),
        ("study.yaml", "space.loss.edge_profile", "'smooth'", "'soft'"),
    ),
    Case(
        "study-space-duplicate-choice",
        study_create(space={"loss.edge_width": {"choices": [1, 2, 2]}}),
        ("study.yaml", "space.loss.edge_width", "choice 2 is listed twice", "each value once"),
    ),
    Case(
        "study-space-not-a-range",
        study_create(space={"loss.edge_lambda": 0.2}),
        ("study.yaml", "space.loss.edge_lambda", "0.2", "{low: .., high: ..}"),
    ),
    Case(
        "study-unknown-sampler",
        study_create(sampler={"kind": "bayes"}),
        ("study.yaml", "sampler.kind", "'bayes'", "'tpe'", "'grid'"),
    ),
    Case(
        "study-unknown-pruner",
        study_create(pruner={"kind": "patient"}),
        ("study.yaml", "pruner.kind", "'patient'", "median", "hyperband"),
    ),
    Case(
        "study-percentile-out-of-range",
        study_create(pruner={"kind": "percentile", "percentile": 100}),
        ("study.yaml", "pruner.percentile", "100", "< 100"),
    ),
    Case(
        "study-enqueue-outside-space",
        study_create(enqueue=[{"loss.edge_lambda": 0.9}]),
        ("study.yaml", "enqueue[0].loss.edge_lambda", "0.9", "0.0 <= x <= 0.5"),
    ),
    Case(
        "study-enqueue-path-not-in-space",
        study_create(enqueue=[{"optim.lr": 0.01}]),
        ("study.yaml", "enqueue[0].optim.lr", "not a path of space", "loss.edge_lambda"),
    ),
    Case(
        "study-trainer-block-bad-field",
        study_create(trainer={**TRAINER, "loss": {"round_ratio": 2.0}}),
        ("study.yaml", "trainer.loss.round_ratio", "2.0", "<= 1"),
    ),
    Case(
        "study-storage-not-a-url",
        study_create(storage="edgesearch.db"),
        ("study.yaml", "storage", "not an SQLAlchemy URL", "sqlite:///"),
    ),
    Case(
        "study-same-name-different-config",
        after(known_study, study_create(sampler={"kind": "random", "seed": 1}, n_trials=7)),
        ("'known'", "already exists", "different config", "sampler.seed: 0 -> 1", "n_trials: 2 -> 7"),
    ),
    Case(
        "study-same-name-more-trials",
        after(known_study, study_create(n_trials=7)),
        ("'known'", "n_trials: 2 -> 7", f"edgesearch study set {KNOWN} --n-trials 7"),
    ),
    Case(
        "study-set-below-the-finished-trials",
        after(known_with_finished, plain("study", "set", KNOWN, "--n-trials", "1", "--storage", "{storage}")),
        ("--n-trials", "1", f"'{KNOWN}'", "2 finished", "at least 2"),
    ),
    Case("study-set-unknown-study", on_known("study", "set", "nope", "--n-trials", "5"), ("'nope'", KNOWN)),
    # ---- trainer configs (edgesearch train FILE)
    Case(
        "trainer-file-missing",
        plain("train", "{tmp}/nope.yaml", "--out", "{tmp}/out"),
        ("{tmp}/nope.yaml", "file not found"),
    ),
    Case(
        "trainer-top-level-list",
        train_text("- epochs: 3\n"),
        ("trainer.yaml", "expected a mapping", "list"),
    ),
    Case(
        "trainer-duplicate-yaml-key",
        train_text(yaml.safe_dump(TRAINER) + "epochs: 5\n"),
        ("trainer.yaml", "epochs", "duplicate key", "line"),
    ),
    Case(
        "trainer-unknown-field",
        train(optim={"learning_rate": 0.1}),
        ("trainer.yaml", "optim.learning_rate", "unknown key", "allowed: name, lr"),
    ),
    Case("trainer-lr-negative", train(optim={"lr": -0.001}), ("trainer.yaml", "optim.lr", "-0.001", "x > 0")),
    Case("trainer-edge-width-zero", train(loss={"edge_width": 0}), ("trainer.yaml", "loss.edge_width", "0", "1 <= x")),
    Case(
        "trainer-edge-profile-unknown",
        train(loss={"edge_profile": "gaussian"}),
        ("trainer.yaml", "loss.edge_profile", "'gaussian'", "'hard'", "'soft'"),
    ),
    Case("trainer-epochs-wrong-type", train(epochs="ten"), ("trainer.yaml", "epochs", "'ten'", "integer", "x >= 1")),
    Case("trainer-loss-kind-unknown", train(loss={"kind": "dice"}), ("trainer.yaml", "loss.kind", "'dice'", "'focal'")),
    Case("trainer-loader-unknown", train(data={"loader": "gpu"}), ("trainer.yaml", "data.loader", "'gpu'", "'device'")),
    Case(
        "trainer-num-workers-word",
        train(data={"num_workers": "many"}),
        ("trainer.yaml", "data.num_workers", "'many'", "auto or a whole number 0..64"),
    ),
    Case(
        "train-data-cache-budget-malformed",
        train(),
        ("EDGESEARCH_DATA_CACHE_MB", "'lots'", "a whole number of MiB >= 0"),
        env={"EDGESEARCH_DATA_CACHE_MB": "lots"},
    ),
    Case(
        "worker-data-cache-budget-malformed",
        on_known("worker", KNOWN, "--runs-dir", "{tmp}/runs"),
        ("EDGESEARCH_DATA_CACHE_MB", "'-5'", "a whole number of MiB >= 0"),
        env={"EDGESEARCH_DATA_CACHE_MB": "-5"},
    ),
    Case("trainer-epochs-boolean", train(epochs=True), ("trainer.yaml", "epochs", "true is a boolean")),
    Case(
        "trainer-checkpoint-interval-negative",
        train(checkpoint_interval=-1),
        ("trainer.yaml", "checkpoint_interval", "0 <= x <= 86400"),
    ),
    Case("trainer-seed-huge", train(seed=10**20), ("trainer.yaml", "seed", "0 <= x <= 2147483647")),
    Case(
        "trainer-synthetic-seed-negative",
        train(data={"synthetic": {"seed": -1}}),
        ("trainer.yaml", "data.synthetic.seed", "-1", "0 <= x"),
    ),
    Case("trainer-batch-of-one", train(data={"batch_size": 1}), ("trainer.yaml", "data.batch_size", "x >= 2")),
    Case(
        "trainer-training-split-of-one",
        train(data={"val_fraction": 0.9, "synthetic": {"n_images": 4}}),
        ("data.synthetic.n_images", "training split has 1 image"),
    ),
    Case(
        "trainer-image-size-not-multiple-of-32",
        train(data={"image_size": 100}),
        ("trainer.yaml", "data.image_size", "100", "multiple of 32"),
    ),
    Case(
        "trainer-patch-size-not-multiple-of-32",
        train(data={"patch_size": 100}),
        ("trainer.yaml", "data.patch_size", "100", "multiple of 32", "try 96"),
    ),
    Case(
        "trainer-patch-size-too-small",
        train(data={"patch_size": 16}),
        ("trainer.yaml", "data.patch_size", "16", "32 <= x <= 4096"),
    ),
    Case(
        "trainer-resize-and-patches",
        train(data={"image_size": 128, "patch_size": 256}),
        ("trainer.yaml", "data", "image_size", "patch_size", "exclude each other", "image_size: null"),
    ),
    Case(
        "trainer-resize-and-scale",
        train(data={"image_size": 128, "scale": 0.5}),
        ("trainer.yaml", "data", "image_size", "scale", "exclude each other"),
    ),
    Case("trainer-scale-zero", train(data={"scale": 0}), ("trainer.yaml", "data.scale", "0", "0.1 <= x <= 2")),
    Case("trainer-scale-too-large", train(data={"scale": 8}), ("trainer.yaml", "data.scale", "8", "0.1 <= x <= 2")),
    Case(
        "trainer-foreground-fraction-above-one",
        train(data={"foreground_fraction": 1.5}),
        ("trainer.yaml", "data.foreground_fraction", "1.5", "x <= 1"),
    ),
    Case(
        "trainer-overlap-one",
        train(data={"overlap": 1.0}),
        ("trainer.yaml", "data.overlap", "1.0", "x < 1"),
    ),
    Case(
        "trainer-patches-per-epoch-one",
        train(data={"patches_per_epoch": 1}),
        ("trainer.yaml", "data.patches_per_epoch", "1", "2 <= x"),
    ),
    Case(
        "trainer-unknown-encoder",
        train(model={"encoder": "resnet999"}),
        ("trainer.yaml", "model.encoder", "'resnet999'", "resnet34"),
    ),
    Case(
        "trainer-unknown-timm-encoder",
        train(model={"encoder": "tu-mobilenetv3_small_minimal_100"}),
        (
            "trainer.yaml",
            "model.encoder",
            "'mobilenetv3_small_minimal_100'",
            "timm.list_models()",
            "tu-mobilenetv3_small_100",
        ),
    ),
    Case(
        "trainer-unknown-arch",
        train(model={"arch": "vnet"}),
        ("trainer.yaml", "model.arch", "'vnet'", "unet"),
    ),
    Case("trainer-unknown-device", train(device="tpu"), ("trainer.yaml", "device", "'tpu'", "cuda:N")),
    Case(
        "trainer-encoder-weights-missing",
        train(model={"encoder_weights": "weights/encoder.pth"}),
        ("trainer.yaml", "model.encoder_weights", "weights/encoder.pth", "imagenet"),
    ),
    Case(
        "trainer-encoder-weights-packaged-for-another-encoder",
        train(model={"encoder": "resnet18", "encoder_weights": "packaged"}),
        ("trainer.yaml", "model.encoder_weights", "'resnet18'", "tu-tf_efficientnet_lite0 or mobilenet_v2"),
    ),
    Case(
        "trainer-encoder-weights-misaligned",
        after(
            resnet18_encoder_state_at("encoder.pt"),
            train(model={"encoder": "mobilenet_v2", "encoder_weights": "encoder.pt"}),
        ),
        (
            "model.encoder_weights",
            "encoder.pt",
            "do not line up in order",
            "the file holds 120 tensors, the encoder 312",
        ),
    ),
    # ---- data folders (edgesearch train FILE --data DIR)
    Case(
        "data-missing-folder",
        plain("train", "{trainer}", "--data", "{tmp}/nope", "--out", "{tmp}/out"),
        ("data.root", "{tmp}/nope", "no such folder"),
    ),
    Case(
        "data-folder-without-images-and-masks",
        after(folder("data"), plain("train", "{trainer}", "--data", "{tmp}/data", "--out", "{tmp}/out")),
        ("{tmp}/data/images", "folder missing", "images/ and masks/"),
    ),
    Case("data-empty-folder", train_on(emptied), ("{tmp}/data", "empty", ".png")),
    Case("data-unpaired-image", train_on(drop("masks/img01.png")), ("images/img01.png", "image without a mask")),
    Case("data-unpaired-mask", train_on(drop("images/img04.png")), ("masks/img04.png", "mask without an image")),
    Case("data-corrupt-image", train_on(corrupt("images/img02.png")), ("images/img02.png", "unreadable image")),
    Case("data-corrupt-mask", train_on(corrupt("masks/img05.png")), ("masks/img05.png", "unreadable mask")),
    Case("data-size-mismatch", train_on(small_mask), ("masks/img02.png", "32x32", "64x64")),
    Case("data-non-binary-mask", train_on(gradient_mask), ("masks/img03.png", "not binary", "0/255")),
    Case("data-one-pair", train_on(one_pair), ("data.root", "{tmp}/data", "at least 2")),
    Case("data-duplicate-stem", train_on(twin_stem), ("img00.jpg", "img00.png", "share the stem")),
    Case("data-val-without-masks", train_on(val_without_masks), ("{tmp}/data/val/masks", "folder missing")),
    Case(
        "data-nan-pixels-with-imagenet-scaling",
        train_on(nan_pixel, data={"normalize": "imagenet"}),
        ("images/img02.tif", "has 1 NaN pixel values", "data.normalize: percentile"),
    ),
    Case("data-symlink-loop", train_on(symlink("img06.png", "img06.png")), ("images/img06.png", "symbolic link loop")),
    Case(
        "data-dangling-symlink",
        train_on(symlink("img06.png", "moved.png")),
        ("images/img06.png", "broken symbolic link", "moved.png does not exist"),
    ),
    Case(
        "data-masks-named-with-a-suffix",
        train_on(masks_named("_mask")),
        ("data.mask_suffix: _mask", "masks/img00_mask.png"),
    ),
    Case(
        "data-mask-suffix-that-the-masks-lack",
        train_on(lambda data: None, data={"mask_suffix": "_mask"}),
        ('data.mask_suffix: ""', "masks/img00.png", "does not end with data.mask_suffix '_mask'"),
    ),
    Case(
        "data-pairing-and-content-problems-together",
        train_on(unpaired_and_corrupt),
        ("images/img01.png: image without a mask", "images/img02.png: unreadable image", "masks/img03.png: mask is"),
    ),
    Case(
        "data-multi-page-tiff-too-large",
        train_on(page_stack),
        ("images/img02.tif", "30 pages of 2000x2000", "limit is 100,000,000"),
    ),
    Case(
        "trainer-mask-suffix-with-extension",
        train(data={"mask_suffix": "_mask.png"}),
        ("trainer.yaml", "data.mask_suffix", "'_mask.png'", "file extension", "such as '_mask'"),
    ),
    Case(
        "trainer-mask-suffix-with-slash",
        train(data={"mask_suffix": "../labels/x"}),
        ("trainer.yaml", "data.mask_suffix", "'../labels/x'", "without / or"),
    ),
    Case(
        "trainer-mask-suffix-not-text",
        train(data={"mask_suffix": 5}),
        ("trainer.yaml", "data.mask_suffix", "5 is not a string", "_mask"),
    ),
    Case(
        "cli-predict-nan-pixels-with-imagenet-scaling",
        predict_on(nan_tiff, data={"normalize": "imagenet"}),
        ("nan.tif", "has 3 NaN pixel values", "data.normalize: percentile"),
    ),
    Case(
        "cli-predict-multi-page-tiff-too-large",
        predict_on(lambda tmp: write_page_stack(tmp / "stack.tif", pages=30, side=2000)),
        ("stack.tif", "30 pages of 2000x2000", "limit is 100,000,000"),
    ),
    # ---- CLI options
    Case(
        "cli-epochs-zero",
        plain("train", "{trainer}", "--epochs", "0", "--out", "{tmp}/out"),
        ("--epochs", "greater than or equal to 1"),
    ),
    Case(
        "cli-device-tpu",
        plain("train", "{trainer}", "--device", "tpu", "--out", "{tmp}/out"),
        ("--device", "'tpu'", "cuda:N"),
    ),
    Case(
        "cli-train-out-not-empty",
        after(non_empty_folder("out"), plain("train", "{trainer}", "--out", "{tmp}/out")),
        ("--out", "{tmp}/out", "not empty"),
    ),
    Case(
        "cli-predict-neither-study-nor-checkpoint",
        after(one_image, plain("predict", "{tmp}/data/images", "--out", "{tmp}/masks")),
        ("--study", "--checkpoint"),
    ),
    Case(
        "cli-predict-threshold-above-1",
        predict_with_checkpoint("--threshold", "1.5"),
        ("threshold", "1.5", "0 < x < 1"),
    ),
    Case("cli-predict-device-tpu", predict_with_checkpoint("--device", "tpu"), ("--device", "'tpu'", "cuda:N")),
    Case("cli-predict-overlap-1", predict_with_checkpoint("--overlap", "1"), ("overlap: 1.0", "0 <= x < 1")),
    Case("cli-predict-overlap-negative", predict_with_checkpoint("--overlap", "-0.5"), ("overlap: -0.5", "0 <= x < 1")),
    Case("cli-predict-overlap-nan", predict_with_checkpoint("--overlap", "nan"), ("overlap: nan", "0 <= x < 1")),
    Case("cli-predict-overlap-not-a-number", predict_with_checkpoint("--overlap", "half"), ("--overlap", "number")),
    Case(
        "cli-predict-blend-unknown", predict_with_checkpoint("--blend", "median"), ("--blend", "'median'", "gaussian")
    ),
    Case(
        # TRAINER resizes (data.image_size 64): a model without windows to overlap or blend.
        "cli-predict-overlap-for-a-resizing-model",
        predict_with_checkpoint("--overlap", "0.25"),
        ("overlap: 0.25", "sliding window", "data.image_size 64"),
    ),
    Case(
        "cli-predict-blend-for-a-resizing-model",
        predict_with_checkpoint("--blend", "mean"),
        ("blend: 'mean'", "sliding window", "data.image_size 64"),
    ),
    Case(
        "cli-predict-missing-input",
        predict_with_checkpoint(missing_input=True),
        ("{tmp}/nope.png", "no such file"),
    ),
    Case(
        "cli-enqueue-integer-of-5000-digits",
        on_known("study", "enqueue", KNOWN, "loss.edge_lambda=" + "9" * 5000),
        ("enqueue", "loss.edge_lambda", "4300"),
    ),
    Case("cli-export-format-xml", on_known("study", "export", KNOWN, "--format", "xml"), ("--format", "'xml'", "csv")),
    Case("cli-dashboard-port-zero", plain("dashboard", "--port", "0"), ("--port", "greater than or equal to 1")),
    Case("cli-dashboard-port-70000", plain("dashboard", "--port", "70000"), ("--port", "less than or equal to 65535")),
    Case(
        "cli-study-run-processes-zero",
        plain("study", "run", "{study}", "--processes", "0", "--storage", "{storage}"),
        ("--processes", "greater than or equal to 1"),
    ),
    Case(
        "cli-study-run-artifacts-is-a-file",
        after(
            plain_file("pictures"),
            plain("study", "run", "{study}", "--artifacts", "{tmp}/pictures", "--storage", "{storage}"),
        ),
        ("artifacts", "{tmp}/pictures", "expected a folder"),
    ),
    Case(
        "cli-predict-out-not-empty",
        after(non_empty_folder("masks"), on_known("predict", "--study", KNOWN, "{tmp}/data", "--out", "{tmp}/masks")),
        ("--out", "{tmp}/masks", "not empty"),
    ),
    Case(
        "cli-enqueue-not-an-assignment",
        on_known("study", "enqueue", KNOWN, "edge_lambda"),
        ("'edge_lambda'", "PATH=VALUE", "loss.edge_lambda=0.15"),
    ),
    Case(
        "cli-enqueue-outside-space",
        on_known("study", "enqueue", KNOWN, "loss.edge_lambda=0.9"),
        ("enqueue[0].loss.edge_lambda", "0.9", "0.0 <= x <= 0.5"),
    ),
    Case(
        "cli-enqueue-unknown-choice",
        on_known("study", "enqueue", KNOWN, "loss.kind=dice"),
        ("enqueue[0].loss.kind", "'dice'", "'bce', 'focal'"),
    ),
    # ---- storage URLs
    Case(
        "storage-bad-scheme",
        plain("study", "create", "{study}", "--storage", "mysql://x"),
        ("mysql://x", "unsupported database", "sqlite:///"),
    ),
    Case(
        "storage-not-a-url",
        plain("study", "create", "{study}", "--storage", "notaurl"),
        ("notaurl", "not a valid database URL", "sqlite:///"),
    ),
    Case(
        "storage-sqlite-folder-missing",
        plain("study", "create", "{study}", "--storage", "sqlite:///{tmp}/nope/s.db"),
        ("{tmp}/nope", "does not exist"),
    ),
    Case(
        "storage-sqlite-path-is-a-folder",
        plain("study", "list", "--storage", "sqlite:///{tmp}"),
        ("{tmp}", "is a folder", "study.db"),
    ),
    Case(
        "storage-postgres-driver-unsupported",
        plain("study", "create", "{study}", "--storage", "postgresql+psycopg2://u@localhost/db"),
        ("psycopg2", "not supported", "postgresql+psycopg://"),
    ),
    Case(
        "storage-env-bad-scheme",
        plain("study", "list"),
        ("mysql://x", "unsupported database", "sqlite:///"),
        env={"EDGESEARCH_STORAGE": "mysql://x"},
    ),
    Case(
        "storage-study-run-bad-scheme",
        plain("study", "run", "{study}", "--storage", "mysql://x", "--runs-dir", "{tmp}/runs"),
        ("mysql://x", "unsupported database", "sqlite:///"),
    ),
    # ---- studies that do not exist
    Case("study-unknown-worker", on_known("worker", "nope", "--runs-dir", "{tmp}/runs"), ("'nope'", KNOWN)),
    Case("study-unknown-show", on_known("study", "show", "nope"), ("'nope'", KNOWN)),
    Case("study-unknown-best", on_known("study", "best", "nope"), ("'nope'", KNOWN)),
    Case("study-unknown-export", on_known("study", "export", "nope", "--out", "{tmp}/out.csv"), ("'nope'", KNOWN)),
    Case("study-unknown-enqueue", on_known("study", "enqueue", "nope", "loss.edge_lambda=0.1"), ("'nope'", KNOWN)),
    Case("study-unknown-report", on_known("study", "report", "nope", "--out", "{tmp}/report"), ("'nope'", KNOWN)),
    Case("study-unknown-delete", on_known("study", "delete", "nope", "--yes"), ("'nope'", KNOWN)),
    Case(
        "study-unknown-predict",
        on_known("predict", "--study", "nope", "{tmp}/data", "--out", "{tmp}/masks"),
        ("'nope'", KNOWN),
    ),
    Case(
        "cli-worker-gpu-missing",
        on_known("worker", KNOWN, "--gpus", "5", "--runs-dir", "{tmp}/runs"),
        ("--gpus 5", "no GPU 5") if torch.cuda.is_available() else ("--gpus 5", "CUDA is not available"),
    ),
    Case(
        "cli-worker-per-gpu-without-gpus",
        on_known("worker", KNOWN, "--per-gpu", "2", "--runs-dir", "{tmp}/runs"),
        ("--per-gpu goes with --gpus", "--processes"),
    ),
    Case(
        "cli-worker-artifacts-unwritable",
        on_known("worker", KNOWN, "--artifacts", "/proc/self", "--runs-dir", "{tmp}/runs"),
        ("artifacts", "cannot write into folder /proc/self"),
    ),
    Case(
        "cli-train-force-without-resume",
        plain("train", "{trainer}", "--force", "--out", "{tmp}/out"),
        ("--force goes with --resume",),
    ),
    # Output paths that cannot be folders, and output folders that hold somebody else's files.
    Case(
        "cli-train-resume-into-another-run",
        after(other_run, plain("train", "{trainer}", "--resume", "{tmp}/a/last.pt", "--out", "{tmp}/b")),
        ("--out", "{tmp}/b", "not empty", "not the run being resumed", "{tmp}/a"),
    ),
    Case(
        "cli-train-out-under-a-file",
        after(plain_file("a"), plain("train", "{trainer}", "--out", "{tmp}/a/b")),
        ("--out", "{tmp}/a/b", "{tmp}/a is not a folder"),
    ),
    Case(
        "cli-export-model-checkpoint-missing",
        plain("export-model", "--checkpoint", "{tmp}/nope.pt", "--out", "{tmp}/model.onnx"),
        ("{tmp}/nope.pt", "checkpoint not found"),
    ),
    Case(
        "cli-export-model-study-and-checkpoint",
        export_with_checkpoint("--study", KNOWN),
        ("exactly one of --study NAME or --checkpoint PATH",),
    ),
    Case(
        "cli-export-model-format-tflite", export_with_checkpoint("--format", "tflite"), ("--format", "'tflite'", "onnx")
    ),
    Case(
        "cli-export-model-out-in-a-missing-folder",
        export_with_checkpoint(out="exports/model.onnx"),
        ("--out", "{tmp}/exports/model.onnx", "folder {tmp}/exports does not exist"),
    ),
    Case(
        "cli-export-model-out-is-a-folder",
        after(folder("model.onnx"), export_with_checkpoint()),
        ("--out", "{tmp}/model.onnx", "is a folder"),
    ),
    Case(
        # The earlier file stays as it was: the new one would have replaced it only once whole.
        "cli-export-model-weights-of-another-model",
        after(
            an_older_export,
            export_with_checkpoint(weights=lambda path: resnet18_encoder_state_at(path.name)(path.parent)),
        ),
        ("{tmp}/run/best.pt", "does not fit the config's model unet/resnet18"),
    ),
    Case(
        "cli-predict-onnx-missing",
        predict_onnx(model=lambda path: None),
        ("{tmp}/model.onnx", "ONNX model not found"),
    ),
    Case(
        "cli-predict-onnx-not-onnx",
        predict_onnx(model=lambda path: path.write_text("not a model")),
        ("{tmp}/model.onnx", "not an ONNX model onnxruntime can load"),
    ),
    Case(
        "cli-predict-onnx-of-somebody-else",
        predict_onnx(model=tiny_onnx),
        ("{tmp}/model.onnx", "not a model exported by edgesearch export-model"),
    ),
    Case(
        "cli-predict-onnx-newer-metadata",
        predict_onnx(edgesearch__metadata="2"),
        ("{tmp}/model.onnx", "metadata format '2'", "export the model again"),
    ),
    Case(
        "cli-predict-onnx-bad-metadata",
        predict_onnx(input__std="[0.2, 0, 0.2]", window=None),
        ("{tmp}/model.onnx: metadata input.std", "3 numbers > 0", "{tmp}/model.onnx: metadata window is missing"),
    ),
    Case(
        "cli-predict-onnx-graph-of-other-channels",
        predict_onnx(trainer=merge(TRAINER, {"model": {"in_channels": 1}})),
        ("{tmp}/model.onnx", "expected one input (N, 1, H, W)", "image (n, 3, h, w)"),
    ),
    Case(
        "cli-predict-onnx-and-checkpoint",
        predict_onnx("--checkpoint", "{tmp}/run/best.pt"),
        ("--checkpoint: not with --onnx FILE", "exactly one of --study NAME, --checkpoint PATH or --onnx FILE"),
    ),
    Case("cli-predict-onnx-device-cuda", predict_onnx("--device", "cuda"), ("--device cuda", "auto, cpu")),
    Case(
        # TRAINER resizes (data.image_size 64): a model without windows to overlap.
        "cli-predict-onnx-overlap-for-a-resizing-model",
        predict_onnx("--overlap", "0.25"),
        ("overlap: 0.25", "sliding window", "data.image_size 64"),
    ),
    Case(
        "cli-predict-out-under-a-file",
        after(plain_file("a"), predict_with_checkpoint(out="a/b")),
        ("--out", "{tmp}/a/b", "{tmp}/a is not a folder"),
    ),
    Case(
        "cli-worker-runs-dir-is-a-file",
        after(plain_file("runs"), on_known("worker", KNOWN, "--runs-dir", "{tmp}/runs")),
        ("--runs-dir", "{tmp}/runs", "not a folder"),
    ),
    Case(
        "cli-study-run-runs-dir-is-a-file",
        after(
            plain_file("runs"), plain("study", "run", "{study}", "--storage", "{storage}", "--runs-dir", "{tmp}/runs")
        ),
        ("--runs-dir", "{tmp}/runs", "not a folder"),
    ),
    Case(
        "cli-report-out-holds-the-users-files",
        after(users_own_report_files, on_known("study", "report", KNOWN, "--out", "{tmp}/report")),
        ("--out", "{tmp}/report", "not empty", "no earlier report"),
    ),
    Case(
        "cli-report-out-dangling-symlink",
        after(dangling_link("link"), on_known("study", "report", KNOWN, "--out", "{tmp}/link")),
        ("--out", "{tmp}/link", "broken symbolic link"),
    ),
    # A pickle that a weights-only load refuses: never the advice to load it unsafely.
    Case(
        "cli-train-resume-unsafe-pickle",
        after(
            unsafe_pickle_at("evil.pt"), plain("train", "{trainer}", "--resume", "{tmp}/evil.pt", "--out", "{tmp}/out")
        ),
        ("{tmp}/evil.pt", "not an edgesearch checkpoint"),
        absent=("weights_only",),
    ),
    Case(
        "cli-predict-checkpoint-unsafe-pickle",
        predict_with_checkpoint(weights=unsafe_pickle),
        ("{tmp}/run/best.pt", "not an edgesearch checkpoint"),
        absent=("weights_only",),
    ),
    Case(
        "trainer-encoder-weights-unsafe-pickle",
        after(unsafe_pickle_at("encoder.pt"), train(model={"encoder_weights": "encoder.pt"})),
        ("model.encoder_weights", "encoder.pt", "cannot be loaded safely"),
        absent=("weights_only",),
    ),
    # Read-only commands on somebody else's database, or on a FIFO: refused, the file byte-identical.
    Case("foreign-db-list", on_foreign("study", "list"), ("not an edgesearch/Optuna database",)),
    Case("foreign-db-show", on_foreign("study", "show", "x"), ("not an edgesearch/Optuna database",)),
    Case("foreign-db-best", on_foreign("study", "best", "x"), ("not an edgesearch/Optuna database",)),
    Case("foreign-db-export", on_foreign("study", "export", "x"), ("not an edgesearch/Optuna database",)),
    Case(
        "foreign-db-report",
        on_foreign("study", "report", "x", "--out", "{tmp}/report"),
        ("not an edgesearch/Optuna database",),
    ),
    Case(
        "foreign-db-predict",
        on_foreign("predict", "--study", "x", "{tmp}/s.db", "--out", "{tmp}/masks"),
        ("not an edgesearch/Optuna database",),
    ),
    Case("foreign-db-dashboard", on_foreign("dashboard", "--port", "1"), ("not an edgesearch/Optuna database",)),
    Case("fifo-db-list", on_fifo("study", "list"), ("pipe.db", "not a regular file")),
    Case("fifo-db-show", on_fifo("study", "show", "x"), ("pipe.db", "not a regular file")),
    Case("study-best-without-trials", on_known("study", "best", KNOWN), (f"'{KNOWN}'", "no completed trial")),
    Case(
        "study-best-pick-on-one-objective",
        on_known("study", "best", KNOWN, "--pick", "knee"),
        ("--pick is for studies of two objectives", f"'{KNOWN}'"),
    ),
    Case(
        "study-best-rule-unknown",
        on_known("study", "best", KNOWN, "--rule", "nonsense"),
        ("--rule", "'nonsense'", "'highest'", "'confirmed'", "'shrinkage'"),
    ),
    Case(
        "study-best-rule-with-pick",
        after(
            known_pareto,
            plain("study", "best", PARETO, "--rule", "highest", "--pick", "knee", "--storage", "{storage}"),
        ),
        ("--rule and --pick do not go together",),
    ),
    Case(
        "study-best-rule-on-two-objectives",
        after(known_pareto, plain("study", "best", PARETO, "--rule", "shrinkage", "--storage", "{storage}")),
        (f"'{PARETO}'", "a rule of choosing ranks one metric", "--pick"),
    ),
    Case(
        "study-best-pick-unknown",
        after(known_pareto, plain("study", "best", PARETO, "--pick", "middle", "--storage", "{storage}")),
        ("--pick", "'middle'", "knee"),
    ),
    Case(
        "study-best-two-objectives-without-pick",
        after(known_pareto, plain("study", "best", PARETO, "--storage", "{storage}")),
        (f"'{PARETO}'", "no completed trial yet", "--pick val_iou|val_boundary_iou|knee"),
    ),
    Case(
        "study-best-two-objectives-without-trials",
        after(known_pareto, plain("study", "best", PARETO, "--pick", "knee", "--storage", "{storage}")),
        (f"'{PARETO}'", "no completed trial"),
    ),
    Case(
        "cli-predict-two-objectives-without-pick",
        after(
            known_pareto,
            plain("predict", "--study", PARETO, "{tmp}/data", "--out", "{tmp}/masks", "--storage", "{storage}"),
        ),
        (f"'{PARETO}'", "--pick val_iou|val_boundary_iou|knee"),
    ),
    Case("cli-predict-pick-with-checkpoint", predict_with_checkpoint("--pick", "knee"), ("--pick goes with --study",)),
    Case(
        "study-unknown-on-missing-sqlite-file",
        # A read-only command on a SQLite file that does not exist must not create an empty database.
        plain("study", "show", "nope", "--storage", "{storage}"),
        ("no database file", "{tmp}", "study create"),
    ),
]


# --------------------------------------------------------------------------- what "nothing written" means


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every path under ``root``: files with (size, mtime), folders as None; SQLite files by name only."""
    found: dict[str, tuple[int, int] | None] = {}
    for path in root.rglob("*"):
        name = str(path.relative_to(root))
        if path.name.endswith((f"{DB}-wal", f"{DB}-shm", f"{DB}-journal")):
            continue  # SQLite's side files come and go with readers
        if path.is_dir() or path.name == DB:
            found[name] = None
        else:
            stat = path.lstat()  # a link as itself: it may lead nowhere
            found[name] = (stat.st_size, stat.st_mtime_ns)
    return found


def digest(path: Path) -> str | None:
    """The SHA-256 of the file's bytes, or None if absent: a read-only command must not change one."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def database(path: Path) -> dict[str, list[tuple[Any, ...]]] | None:
    """The rows of every table of the SQLite file (studies, trials, attributes, ...), or None if absent."""
    if not path.exists():
        return None
    with contextlib.closing(sqlite3.connect(path)) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(map(tuple, connection.execute(f'SELECT * FROM "{table}"')), key=repr) for table in tables}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGESEARCH_STORAGE", raising=False)
    artifacts = tmp_path / "artifacts"
    args = case.build(tmp_path)
    files_before, rows_before, bytes_before = tree(tmp_path), database(tmp_path / DB), digest(tmp_path / DB)

    result = CliRunner().invoke(app, args, env=case.env)

    shown = f"args: {args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.exit_code == 2, shown
    assert result.stderr.strip(), shown
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, shown
    for expected in case.expect:
        assert expected.replace("{tmp}", str(tmp_path)) in result.stderr, f"missing {expected!r}\n{shown}"
    for unwanted in case.absent:
        assert unwanted not in result.stderr, f"holds {unwanted!r}\n{shown}"
    assert database(tmp_path / DB) == rows_before, f"the storage changed\n{shown}"
    assert digest(tmp_path / DB) == bytes_before, f"the database file changed\n{shown}"
    assert tree(tmp_path) == files_before, f"files were written\n{shown}"
    assert not artifacts.exists() or not any(artifacts.iterdir()), shown


# --------------------------------------------------------------------------- a file built to exhaust memory

CAPPED = """
import resource, sys
import edgesearch.trainer.loop, edgesearch.trainer.predict  # torch and the rest, before the cap
size = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
cap = size + 2 * 2**30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
from edgesearch.cli import main
sys.argv = ["edgesearch", *sys.argv[1:]]
main()
"""
"""Run the CLI with 2 GiB of address space beyond what its imports took: far less than a decoded 6.4e9 pixels."""


@pytest.mark.slow
def test_a_tiff_of_400_pages_of_4000x4000_is_refused_from_its_header_under_a_memory_cap(tmp_path: Path) -> None:
    data = write_folder(tmp_path / "data", n=4)
    (data / "images" / "img02.png").unlink()
    stack = write_page_stack(data / "images" / "img02.tif", pages=400, side=4000)
    assert stack.stat().st_size < 8 * 2**20  # 6.4e9 pixels in 7 MB
    commands = {
        "train": ["train", str(trainer_file(tmp_path)), "--data", str(data), "--out", str(tmp_path / "out")],
        "predict": predict_args(tmp_path, stack, TRAINER),
    }
    for command, args in commands.items():
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            [sys.executable, "-c", CAPPED, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        shown = f"{command}: exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        assert done.returncode == 2, shown
        assert "Traceback" not in done.stderr, shown
        assert "img02.tif: " in done.stderr and "400 pages of 4000x4000 = 6,400,000,000 pixels" in done.stderr, shown
        assert "the limit is 100,000,000" in done.stderr, shown
    assert not (tmp_path / "out").exists() and not (tmp_path / "masks").exists()
