"""The study report: figures and report.json match the stored trials, the HTML is self-contained."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from matplotlib.collections import PathCollection
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.trial import TrialState
from PIL import Image

from edgesearch.errors import UserError
from edgesearch.searcher.results.figures import curves_figure, scatter_figure
from edgesearch.searcher.results.report import build_report
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.front import pareto_front
from edgesearch.searcher.study.studies import create_study
from edgesearch.trainer.config import TrainConfig
from edgesearch.trainer.records import STORED_KEYS as HISTORY_KEYS

TRAINER: dict[str, Any] = {
    "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
    "data": {"image_size": 32, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": 16}},
    "optim": {"warmup_epochs": 0, "freeze_epochs": 0},
    "epochs": 4,
    "device": "cpu",
}
# Trials here are asked and told by hand, under the heartbeat that study storages always have.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

SPACE = {
    "loss.edge_lambda": {"low": 0.0, "high": 0.5},
    "loss.kind": {"choices": ["bce", "focal"]},
    "optim.lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
}

# (state, lambda, kind, lr, val_iou per epoch); the last one stays RUNNING.
PLAN: list[tuple[TrialState, float, str, float, list[float]]] = [
    (TrialState.COMPLETE, 0.15, "focal", 1e-3, [0.40, 0.62, 0.71, 0.69]),
    (TrialState.COMPLETE, 0.00, "bce", 3e-3, [0.30, 0.45, 0.52, 0.55]),
    (TrialState.COMPLETE, 0.45, "bce", 1e-4, [0.20, 0.25, 0.31, 0.33]),
    (TrialState.COMPLETE, 0.09, "focal", 5e-3, [0.35, 0.58, 0.66, 0.60]),
    (TrialState.PRUNED, 0.30, "focal", 2e-4, [0.10, 0.12]),
    (TrialState.FAIL, 0.05, "bce", 1e-2, [0.22]),
    (TrialState.RUNNING, 0.20, "bce", 8e-4, [0.33, 0.50]),
]


def _config(name: str, **extra: Any) -> StudyConfig:
    raw = {"name": name, "n_trials": 10, "sampler": {"kind": "random", "seed": 0}, "pruner": {"kind": "none"}}
    return StudyConfig.from_dict({**raw, "trainer": TRAINER, "space": SPACE, **extra}, source="test")


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)
    return path


def _record(trial: optuna.Trial, config: StudyConfig, values: list[float], run_dir: Path) -> None:
    """What run/trial.py stores for a trial: resolved config, run dir, history, one report per epoch."""
    from edgesearch.searcher.study.space import sample

    train_config: TrainConfig = sample(trial, config.space, config.base_config)
    trial.set_user_attr("config", train_config.model_dump(mode="json"))
    trial.set_user_attr("run_dir", str(run_dir))
    history = []
    for epoch, value in enumerate(values, start=1):
        trial.report(value, step=epoch)
        row = dict.fromkeys(HISTORY_KEYS, 0.0) | {"epoch": epoch, "stage": 1, "val_iou": value}
        history.append(row | {"val_edge_corr": value / 2, "val_boundary_iou": value / 3})
    trial.set_user_attr("history", history)


@dataclass
class Built:
    """The mid-run study of PLAN and the report built from it with its artifact store."""

    study: optuna.Study
    config: StudyConfig
    store: FileSystemArtifactStore
    root: Path
    out: Path
    data: dict[str, Any]
    uploaded: dict[int, bytes]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Trials 0 (best) and 2 (worst) uploaded an overlay; trial 0's run dir holds a different picture, 2's none."""
    root = tmp_path_factory.mktemp("mid-run")
    config = _config("mid-run")
    study, _ = create_study(config, f"sqlite:///{root}/study.db")
    (root / "artifacts").mkdir()
    store = FileSystemArtifactStore(str(root / "artifacts"))
    uploaded = {}
    for number, (state, lam, kind, lr, values) in enumerate(PLAN):
        study.enqueue_trial({"loss.edge_lambda": lam, "loss.kind": kind, "optim.lr": lr})
        trial = study.ask()
        run_dir = root / "runs" / f"trial-{number:05d}"
        _record(trial, config, values, run_dir)
        if number in (0, 2):
            edges = _png(root / "uploads" / str(number) / "edges.png", (number * 100, 10, 200))
            upload_artifact(artifact_store=store, file_path=str(edges), study_or_trial=trial)
            uploaded[number] = edges.read_bytes()
        if number == 0:
            _png(run_dir / "edges.png", (0, 255, 0))
        if state == TrialState.COMPLETE:
            study.tell(trial, max(values))
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)
    out = root / "report"
    build_report(study, config, out, artifact_store=store)
    data = json.loads((out / "report.json").read_text())
    return Built(study, config, store, root, out, data, uploaded)


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.h1 = ""
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_h1 = tag == "h1"
        if tag == "img":
            self.sources.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        self._in_h1 = False

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self.h1 += data


def test_report_data_matches_the_stored_trials(built: Built) -> None:
    data, config = built.data, built.config
    with_values = [t for t in built.study.get_trials() if t.intermediate_values]
    assert data["curves"]["n_curves"] == len(with_values) == len(PLAN)
    by_number = {c["number"]: c for c in data["curves"]["trials"]}
    for number, (state, lam, _, _, values) in enumerate(PLAN):
        assert by_number[number]["epochs"] == list(range(1, len(values) + 1))
        assert by_number[number]["values"] == values
        assert by_number[number]["lambda"] == lam and by_number[number]["state"] == state.name

    finished = [(lam, kind, max(v)) for s, lam, kind, _, v in PLAN if s in (TrialState.COMPLETE, TrialState.PRUNED)]
    points = data["iou_vs_lambda"]["points"]
    assert sorted((p["x"], p["y"]) for p in points) == sorted((lam, best) for lam, _, best in finished)
    assert sum(p["loss_kind"] == "bce" for p in points) == sum(kind == "bce" for _, kind, _ in finished) == 2
    assert sum(p["loss_kind"] == "focal" for p in points) == sum(kind == "focal" for _, kind, _ in finished) == 3
    assert [p["number"] for p in points if p["state"] == "PRUNED"] == [4]
    # Parameters fixed in the base config are read from each trial's resolved config.
    assert [p["x"] for p in data["iou_vs_edge_width"]["points"]] == [config.base_config.loss.edge_width] * 5
    assert [p["x"] for p in data["iou_vs_round_ratio"]["points"]] == [config.base_config.loss.round_ratio] * 5
    corr = {p["number"]: (p["x"], p["y"]) for p in data["edge_corr_vs_iou"]["points"]}
    assert corr[0] == (0.71, 0.355) and len(corr) == len(finished)

    counts = data["counts"]
    states = {k: counts[k] for k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    assert states == {"COMPLETE": 4, "PRUNED": 1, "FAIL": 1, "RUNNING": 1, "WAITING": 0}
    assert (counts["finished"], counts["n_trials"]) == (5, 10)
    assert set(data["importances"]["values"]) == set(SPACE)
    assert data["best_trial"]["number"] == 0 and data["best_trial"]["value"] == 0.71
    assert data["best_trial"]["config"]["loss"]["kind"] == "focal"
    assert data["best_trial"]["params"]["loss.edge_lambda"] == 0.15
    assert data["worst_trial"]["number"] == 2 and data["worst_trial"]["value"] == 0.33


def test_figures_plot_exactly_the_report_data(built: Built) -> None:
    data = built.data
    lines = curves_figure(data["curves"]).axes[0].get_lines()
    assert len(lines) == data["curves"]["n_curves"]
    plotted = [(np.asarray(line.get_xdata()).tolist(), np.asarray(line.get_ydata()).tolist()) for line in lines]
    assert plotted == [(c["epochs"], c["values"]) for c in data["curves"]["trials"]]
    assert [len(x) for x, _ in plotted] == [len(v) for *_, v in PLAN]
    assert [line.get_linestyle() for line in lines[3:6]] == ["-", "--", ":"]
    axes = scatter_figure(data["iou_vs_lambda"]).axes[0]
    collections = [c for c in axes.collections if isinstance(c, PathCollection)]
    offsets = sorted(tuple(xy) for c in collections for xy in np.asarray(c.get_offsets()).tolist())
    assert offsets == sorted((p["x"], p["y"]) for p in data["iou_vs_lambda"]["points"]) and len(offsets) == 5
    assert sorted(str(c.get_label()) for c in collections) == ["bce", "focal", "focal, pruned"]


def test_overlays_of_best_and_worst_come_from_their_artifacts(built: Built) -> None:
    assert (built.out / "best_edges.png").read_bytes() == built.uploaded[0]
    assert (built.out / "worst_edges.png").read_bytes() == built.uploaded[2]
    assert built.data["best_trial"]["overlay"] == "best_edges.png"
    assert built.data["best_trial"]["overlay_source"].startswith("artifact")


def test_without_an_artifact_store_the_run_dir_overlay_is_used_or_its_absence_said(built: Built) -> None:
    out = built.root / "no-store"
    text = build_report(built.study, built.config, out).read_text()
    data = json.loads((out / "report.json").read_text())
    assert data["best_trial"]["overlay_source"].startswith("run dir")
    assert (out / "best_edges.png").read_bytes() == (built.root / "runs/trial-00000/edges.png").read_bytes()
    assert data["worst_trial"]["overlay"] is None and not (out / "worst_edges.png").exists()
    assert "no edge overlay stored" in text


def test_html_is_self_contained_and_says_the_study_is_running(built: Built) -> None:
    text = (built.out / "report.html").read_text()
    parser = _Images()
    parser.feed(text)
    assert parser.h1 == "mid-run"
    figures = {f"{name}.png" for name in ("curves", "iou_vs_lambda", "iou_vs_edge_width", "iou_vs_round_ratio")}
    assert figures | {
        "edge_corr_vs_iou.png",
        "pareto.png",
        "importances.png",
        "best_edges.png",
        "worst_edges.png",
    } == set(parser.sources)
    for src in parser.sources:
        assert not src.startswith(("/", "http:", "https:", "//")) and (built.out / src).is_file(), src
    assert "http://" not in text and "https://" not in text
    assert "still running" in text and "5 of 10" in text
    assert built.data["generated_at"] in text
    assert [p.name for p in built.root.iterdir() if p.name.startswith(".")] == []  # no temp folder left


def test_one_complete_trial_escapes_user_strings_and_explains_missing_importances(
    tmp_path: Path, sqlite_url: str
) -> None:
    config = _config("one")
    study, _ = create_study(config, sqlite_url)
    trial = study.ask()
    _record(trial, config, [0.4, 0.5], tmp_path / "run")
    trial.set_user_attr("best_checkpoint", "<script>alert(1)</script>")
    study.tell(trial, 0.5)
    trial = study.ask()
    trial.set_user_attr("fail_reason", "<b>boom</b> & more")
    study.tell(trial, state=TrialState.FAIL)
    out = tmp_path / "report"
    text = build_report(study, config, out).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&lt;b&gt;boom&lt;/b&gt; &amp; more" in text
    data = json.loads((out / "report.json").read_text())
    assert "2 complete trials" in data["importances"]["unavailable"]
    assert "importances unavailable" in text and not (out / "importances.png").exists()
    assert data["best_trial"]["number"] == data["worst_trial"]["number"] == 0
    assert data["failures"] == [{"number": 1, "reason": "<b>boom</b> & more"}]


def test_an_empty_study_still_gets_a_report(tmp_path: Path, sqlite_url: str) -> None:
    config = _config("empty")
    study, _ = create_study(config, sqlite_url)
    study.enqueue_trial({"loss.edge_lambda": 0.1, "loss.kind": "bce", "optim.lr": 1e-3})
    out = tmp_path / "report"
    text = build_report(study, config, out).read_text()
    data = json.loads((out / "report.json").read_text())
    assert data["curves"]["n_curves"] == 0 and data["counts"]["WAITING"] == 1
    assert data["best_trial"] is None and data["worst_trial"] is None
    assert "unavailable" in data["importances"] and "still running" in text


@pytest.mark.slow
def test_a_report_is_regenerated_in_place_and_stale_files_go(built: Built, tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.mkdir()
    build_report(built.study, built.config, out, artifact_store=built.store)
    (out / "notes.txt").write_text("mine")
    (out / "importances.png").write_bytes(b"old")
    build_report(built.study, built.config, out, artifact_store=built.store)
    assert (out / "importances.png").read_bytes() != b"old"
    fresh = _config("fresh")
    empty, _ = create_study(fresh, f"sqlite:///{tmp_path}/other.db")
    assert (out / "best-config.yaml").is_file()
    build_report(empty, fresh, out)
    assert not (out / "importances.png").exists() and not (out / "best_edges.png").exists()
    assert not (out / "best-config.yaml").exists()  # no best trial: no configuration of one left behind
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["study"]["name"] == "fresh"


def test_an_existing_file_as_out_dir_is_refused(built: Built, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("not a folder")
    with pytest.raises(UserError, match="is a file"):
        build_report(built.study, built.config, target)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("report_json", [None, "not json", '{"study": "a string"}'])
def test_a_folder_that_holds_no_earlier_report_is_refused_and_left_as_it_was(
    built: Built, tmp_path: Path, report_json: str | None
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own page")
    (out / "importances.png").write_bytes(b"my own picture")
    if report_json is not None:
        (out / "report.json").write_text(report_json)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=f"{out}: folder is not empty and holds no earlier report"):
        build_report(built.study, built.config, out, artifact_store=built.store)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary folder either


def test_a_failure_leaves_the_previous_report_untouched(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    before = {p.name: p.read_bytes() for p in built.out.iterdir()}

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("disk full")

    monkeypatch.setattr("edgesearch.searcher.results.report.importances_figure", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(built.study, built.config, built.out, artifact_store=built.store)
    assert {p.name: p.read_bytes() for p in built.out.iterdir()} == before
    assert [p.name for p in built.root.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_study_report_of_a_really_trained_study_renders_in_chromium_with_every_image(
    finished_study: dict[str, Any], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from edgesearch.cli import app
    from edgesearch.searcher.study.studies import load_study
    from tests.browser import broken_images, open_browser, screenshot, wait_for

    name, url = finished_study["name"], finished_study["url"]
    out = tmp_path / "report"
    args = [
        "study",
        "report",
        name,
        "--storage",
        url,
        "--out",
        str(out),
        "--artifacts",
        str(finished_study["artifacts"]),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert str(out / "report.html") in result.output
    study, _ = load_study(name, url)
    trials = study.get_trials()
    data = json.loads((out / "report.json").read_text())
    assert data["curves"]["n_curves"] == len(trials) == 2
    assert sorted((p["x"], p["y"]) for p in data["iou_vs_lambda"]["points"]) == sorted(
        (t.user_attrs["config"]["loss"]["edge_lambda"], t.value) for t in trials
    )
    assert data["best_trial"]["number"] == study.best_trial.number
    assert "still running" not in (out / "report.html").read_text()

    with open_browser() as browser:
        browser.get((out / "report.html").as_uri())
        wait_for(lambda: browser.execute_script("return document.readyState") == "complete", what="the report")
        n_images = browser.execute_script("return document.images.length")
        assert n_images >= 7, n_images  # curves, 3 scatters, edge corr, importances, overlays
        assert broken_images(browser) == []
        assert name in browser.title or name in browser.page_source
        screenshot(browser, tmp_path / "screenshots" / "report.png")


def test_a_sigterm_during_study_report_leaves_no_temporary_folder(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import signal
    import time

    from typer.testing import CliRunner

    from edgesearch.cli import app

    config = _config("signalled")
    create_study(config, sqlite_url)
    out = tmp_path / "reports" / "signalled"
    original = curves_figure

    def terminated_midway(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would, while the report is half built
        time.sleep(5)  # the handler interrupts this
        return original(*args, **kwargs)

    monkeypatch.setattr("edgesearch.searcher.results.report.curves_figure", terminated_midway)
    handler = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(app, ["study", "report", "signalled", "--storage", sqlite_url, "--out", str(out)])
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr
    assert list((tmp_path / "reports").iterdir()) == []  # neither the report nor its hidden temporary folder
    assert signal.getsignal(signal.SIGTERM) == handler  # the previous handler is put back


def test_numbers_in_the_html_read_to_four_significant_digits(built: Built) -> None:
    import re

    text = (built.out / "report.html").read_text()
    readable = re.sub(r"<pre>.*?</pre>", "", text, flags=re.S)  # the resolved config stays exact, to copy
    numbers = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", readable)
    assert numbers, "the report shows values"
    for number in numbers:
        digits = number.replace(".", "").lstrip("0")
        assert len(digits) <= 4, number


def test_the_pareto_front_keeps_exactly_the_undominated_points() -> None:
    points = [(0.8, 0.5), (0.7, 0.6), (0.6, 0.55), (0.8, 0.4), (0.5, 0.7), (0.7, 0.6)]
    # Dominated: (0.6, 0.55) by (0.7, 0.6); (0.8, 0.4) by (0.8, 0.5). Equal points both stay.
    assert pareto_front(points) == [4, 1, 5, 0]
    assert pareto_front([]) == []
    assert pareto_front([(0.3, 0.3)]) == [0]


def test_the_pareto_data_marks_the_front_and_the_best_trial_of_each_metric(built: Built) -> None:
    pareto = built.data["pareto"]
    complete = {t.number for t in built.study.get_trials() if t.state == TrialState.COMPLETE}
    assert {p["number"] for p in pareto["points"]} == complete
    for point in pareto["points"]:  # the stored history: boundary IoU = IoU / 3 at every epoch
        assert point["y"] == pytest.approx(point["x"] / 3)
    # On one rising line only the highest point is undominated, and it is best in both metrics.
    top = max(pareto["points"], key=lambda p: p["x"])
    assert [p["number"] for p in pareto["points"] if p["front"]] == [top["number"]]
    assert pareto["best_iou"] == pareto["best_boundary_iou"] == top["number"]


def test_the_report_opens_with_findings_from_the_complete_trials(built: Built) -> None:
    complete = [t for t in built.study.get_trials() if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number))
    findings = built.data["findings"]
    assert findings[0].startswith(f"Best val_iou {best.value:.4g} (trial {best.number}) of {len(complete)} complete")
    text = (built.out / "report.html").read_text()
    assert text.index("<h2>Findings</h2>") < text.index("<h2>Trials</h2>")
    assert all(html_escape(line) in text for line in findings)


@pytest.mark.slow
def test_the_best_configuration_is_a_trainer_file_that_edgesearch_train_takes(built: Built, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgesearch.cli import app
    from edgesearch.trainer.config import load_train_config

    path = built.out / "best-config.yaml"
    best = built.study.trials[built.data["best_trial"]["number"]]
    # The stored trainer config with the best trial's parameters applied is what the trial trained.
    assert load_train_config(path) == TrainConfig.model_validate(best.user_attrs["config"])
    command = f"edgesearch train {path} --out runs/mid-run-best"
    assert built.data["best_config"] == {"file": "best-config.yaml", "command": command}
    assert f"<pre>{html_escape(command)}</pre>" in (built.out / "report.html").read_text()
    assert path.read_text().startswith("# Study mid-run, trial 0: ")
    assert not any("still improving" in line for line in built.data["findings"])  # its best epoch is 3 of 4
    trained = CliRunner().invoke(app, ["train", str(path), "--epochs", "1", "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    assert (tmp_path / "run" / "best.pt").is_file()


def test_a_best_trial_still_improving_at_its_last_epoch_is_warned_of(tmp_path: Path, sqlite_url: str) -> None:
    config = _config("rising")
    study, _ = create_study(config, sqlite_url)
    for values in ([0.3, 0.5, 0.6], [0.2, 0.4, 0.3]):
        trial = study.ask()
        _record(trial, config, values, tmp_path / f"run-{trial.number}")
        study.tell(trial, max(values))
    build_report(study, config, tmp_path / "report")
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["findings"][1] == (
        "Trial 0 (the best) was still improving at the last epoch: more epochs may help "
        "(its best val_iou, 0.6, came at epoch 3, its last)."
    )
    assert sum("still improving" in line for line in data["findings"]) == 1


def test_importances_from_few_trials_are_called_rough_in_the_findings_and_the_caption(built: Built) -> None:
    (line,) = [line for line in built.data["findings"] if line.startswith("Importance")]
    assert "rough: from only 4 complete trial(s), and fewer than 10 say little" in line
    text = (built.out / "report.html").read_text()
    assert "parameter importances from 4 complete trials (rough: fewer than 10 say little)" in text
