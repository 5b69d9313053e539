"""Every benchmark script runs at its tiny size and prints one valid JSON result.

This proves the scripts work (CI runs them this way); their timings are not judged here, since a
timing on a shared CI machine is noise: the numbers live in BENCHMARKS.md, from ``make bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_") and p.stem != "summary"
)


def test_every_issue_benchmark_has_a_script() -> None:
    expected = {"trainer_overhead", "edge_cost", "input_pipeline", "coordination", "cli_startup", "gpu"}
    expected |= {"method", "checkpoint_cost", "end_to_end", "trial_overhead", "sliding_window", "native_resolution"}
    expected |= {"search", "onnx_predict", "disk_use"}
    assert expected <= set(SCRIPTS)


def test_make_bench_and_the_summary_cover_every_script() -> None:
    """`make bench` runs every script (method and search have their own targets, `make bench-method` and
    `make bench-search`) and benchmarks/summary.py renders each one's result into the BENCHMARKS.md table."""
    from benchmarks import summary

    lines = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    listed = next(line for line in lines if line.startswith("BENCHMARKS :=")).split(":=", 1)[1].split()
    assert sorted(listed) == sorted(set(SCRIPTS) - {"method", "search"})
    targets = {line.split(":", 1)[0] for line in lines if line.startswith("bench-")}
    assert {"bench-method", "bench-search"} <= targets
    assert sorted(summary.RENDER) == SCRIPTS


EXTRA_OPTIONS = {"gpu": ["--trials"], "native_resolution": ["--grid"]}
"""Options that add parts a plain run leaves out: tried too, so that every part of a script runs."""


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_runs_tiny_and_prints_json(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / f"{name}.py"),
            "--tiny",
            *EXTRA_OPTIONS.get(name, []),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["benchmark"] == name
    assert printed["tiny"] is True
    assert printed["machine"]["cpu_count"] >= 1
    if name == "gpu":
        trials = printed["trials"]
        assert [row["k"] for row in trials["per_gpu"]] == [1, 2]
        assert all(row["trials"] == row["k"] and row["trials_per_hour"] > 0 for row in trials["per_gpu"])
        assert set(trials["loader"]) == {"cpu", "device"}
    if name == "coordination":
        # The scale test: 16 worker processes through a real PgBouncer of 4 server connections.
        scale = printed["scale"]
        assert "skipped" not in scale, scale
        at16 = scale["counts"]["16"]
        assert at16["finished"] == at16["n_trials"] and at16["all_exited_0"], at16
        assert (at16["lost"], at16["duplicated"], at16["connection_errors"]) == (0, 0, 0)
        assert 1 <= at16["peak_server_connections"] <= scale["pool_size"] == 4
        assert at16["round_trips_per_trial"] > 0 and at16["server_cpu_ms_per_trial"] > 0


@pytest.mark.slow
def test_the_curve_recorder_records_then_resumes_with_nothing_left(tmp_path: Path) -> None:
    """`record.py --tiny` trains 2 configurations x 1 seed x 2 epochs on the real nuclei into its table; a second
    call finds every run recorded and trains nothing."""
    out = tmp_path / "table.jsonl"
    command = [sys.executable, str(ROOT / "benchmarks" / "curves" / "record.py"), "--tiny", "--jobs", "1"]
    first = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in rows) == ["d00", "d01"]
    for row in rows:
        assert row["seed"] == 0 and len(row["val_iou"]) == len(row["seconds"]) == 2
        assert all(0.0 <= v <= 1.0 for v in row["val_iou"]) and all(s > 0 for s in row["seconds"])
    again = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "2 runs recorded, 0 to record" in again.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2
