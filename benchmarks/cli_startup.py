"""CLI start-up: wall time of ``edgesearch --help``, ``study list``, ``show`` and ``best``, as a user runs them.

Every command runs as a subprocess of the venv's ``edgesearch`` entry point (next to ``sys.executable``),
in turns, after one untimed warm-up run each; the median of N runs counts (N = 7, 2 with ``--tiny``).
Targets (< 0.5 s): ``edgesearch --help``, and ``edgesearch study list`` on a SQLite file holding 3
studies of 20 trials (made with Optuna before timing). Targets (< 1 s): ``study show`` and ``study best``
on a finished edgesearch study in a SQLite file of its own, made before timing by ``study create``'s code
and a worker that really trains its 6 trials (2 with ``--tiny``; tiny U-Nets on built-in shapes, about
10 s each on 2 cores). For information: ``study create --help``, and
``study list`` on PostgreSQL when a server is given (``--postgres URL``, else
``$EDGESEARCH_BENCH_POSTGRES_URL``, else ``$EDGESEARCH_TEST_POSTGRES_URL``) in a database of its own
there, created, filled and dropped by the script.

    python benchmarks/cli_startup.py [--tiny] [--json FILE] [--postgres URL]
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common

from devtools.postgres import fresh_database

TARGET_S = 0.5
READ_TARGET_S = 1.0
"""For the commands that read one study (``study show``, ``study best``): they open it through Optuna."""
FINISHED = "finished"
N_STUDIES = 3
N_TRIALS = 20


def fill(url: str) -> list[str]:
    """Create the studies that ``study list`` shows (untimed): each with ``N_TRIALS`` finished trials."""
    import optuna

    from edgesearch.searcher.storage.opening import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, heartbeat_interval=None)
    names = [f"bench-{i}" for i in range(N_STUDIES)]
    for i, name in enumerate(names):
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=i)
        )
        study.optimize(lambda trial: trial.suggest_float("x", 0.0, 1.0), n_trials=N_TRIALS)
    storage.engine.dispose()  # no pooled connection left open while the commands are timed
    return names


def fill_finished(url: str, runs: Path, n_trials: int) -> str:
    """A finished edgesearch study (untimed): created as ``study create`` does, run to the end by a worker
    that trains every trial (tiny U-Nets on built-in shapes, one epoch each); its name."""
    from edgesearch.cli.options import quiet_optuna
    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.storage._optuna.handles import rdb_storage
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study

    quiet_optuna()
    raw = {
        "name": FINISHED,
        "n_trials": n_trials,
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": {
            "model": {"arch": "unet", "encoder": "resnet18", "encoder_weights": None},
            "data": {"image_size": 32, "batch_size": 8, "num_workers": 0, "synthetic": {"n_images": 16}},
            "epochs": 1,
            "device": "cpu",
        },
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}, "loss.kind": {"choices": ["bce", "focal"]}},
    }
    study, _ = create_study(StudyConfig.from_dict(raw, source="cli_startup"), url)
    summary = run_worker(FINISHED, url, runs_dir=runs)
    if summary.stopped_because != "study complete":
        raise SystemExit(f"the study to read did not finish: {summary.stopped_because}")
    storage = rdb_storage(study)
    if storage is not None:
        storage.engine.dispose()  # no pooled connection left open while the commands are timed
    return FINISHED


def user_environment() -> dict[str, str]:
    """This environment with Python's bytecode cache on, as on a user's machine.

    A user's installed packages come with ``.pyc`` files and an editable checkout writes its own
    ``__pycache__`` on the first run (the untimed warm-up here). ``PYTHONDONTWRITEBYTECODE=1``, set on
    some build machines, would instead recompile edgesearch's own modules on every start.
    """
    return {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def command(argv: list[str], *, cwd: Path, expect: list[str]) -> Callable[[], float]:
    """A timed subprocess run of ``argv``; a failure or missing output stops the benchmark (no bogus timing)."""
    env = user_environment()

    def run() -> float:
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        missing = [text for text in expect if text not in done.stdout]
        if done.returncode != 0 or missing:
            raise SystemExit(
                f"{' '.join(argv[1:])} exited {done.returncode}, missing {missing}:\n{done.stdout}{done.stderr}"
            )
        return elapsed

    return run


def summarize(samples: list[float], *, argv: list[str], target: float | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "command": "edgesearch " + " ".join(argv[1:]),
        "median_s": round(_common.median(samples), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
        "samples_s": [round(s, 4) for s in samples],
    }
    if target is not None:
        record["target_s"] = target
        record["met"] = record["median_s"] < target
    return record


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--postgres", metavar="URL", default=None, help="PostgreSQL server (a database is created)")
    args = p.parse_args()
    runs = 2 if args.tiny else 7
    edgesearch = str(Path(sys.executable).parent / "edgesearch")

    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cli-startup-")))
        sqlite_url = f"sqlite:///{folder / 'studies.db'}"
        names = fill(sqlite_url)
        finished_url = f"sqlite:///{folder / 'finished.db'}"
        finished = fill_finished(finished_url, folder / "runs", 2 if args.tiny else 6)
        variants: dict[str, tuple[list[str], list[str], float | None]] = {
            "help": ([edgesearch, "--help"], ["study"], TARGET_S),
            "study_list_sqlite": ([edgesearch, "study", "list", "--storage", sqlite_url], names, TARGET_S),
            "study_show_sqlite": (
                [edgesearch, "study", "show", finished, "--storage", finished_url],
                [f"study {finished}", "COMPLETE"],
                READ_TARGET_S,
            ),
            "study_best_sqlite": (
                [edgesearch, "study", "best", finished, "--storage", finished_url],
                ["best trial", "checkpoint"],
                READ_TARGET_S,
            ),
            "study_create_help": ([edgesearch, "study", "create", "--help"], ["FILE"], None),
        }
        server, source = _common.given_postgres(args.postgres)
        postgres: dict[str, Any] = {"server": source}
        if server is not None:
            postgres_url = stack.enter_context(fresh_database(server, prefix="es_bench_"))
            fill(postgres_url)
            variants["study_list_postgres"] = ([edgesearch, "study", "list", "--storage", postgres_url], names, None)
        _common.log(f"timing {len(variants)} commands, {runs} runs each after 1 warm-up, in turns")
        samples = _common.alternate(
            {key: command(argv, cwd=folder, expect=expect) for key, (argv, expect, _) in variants.items()},
            rounds=runs,
            warmup=1,
        )

    commands = {
        key: summarize(samples[key], argv=argv, target=targeted) for key, (argv, _, targeted) in variants.items()
    }
    if "study_list_postgres" in commands:
        commands["study_list_postgres"]["command"] = "edgesearch study list --storage <postgres database>"
        commands["study_list_postgres"].update(postgres)
    else:
        commands["study_list_postgres"] = {"skipped": postgres["server"]}
    commands["study_list_sqlite"]["command"] = "edgesearch study list --storage sqlite:///<tmp>/studies.db"
    for key in ("study_show_sqlite", "study_best_sqlite"):
        commands[key]["command"] = commands[key]["command"].replace(str(folder), "<tmp>")
    for key, record in commands.items():
        if "skipped" in record:
            _common.log(f"{key:20s} skipped: {record['skipped']}")
            continue
        verdict = (
            f"  target < {record['target_s']} s: {'met' if record['met'] else 'NOT met'}" if "met" in record else ""
        )
        _common.log(f"{key:20s} median {record['median_s']:.3f} s (min {record['min_s']:.3f}){verdict}")
    targeted = [record for record in commands.values() if "met" in record]
    result = {
        "runs": runs,
        "warmup_runs": 1,
        "bytecode_cache": "on (PYTHONDONTWRITEBYTECODE unset for the timed commands)",
        "storage": {"studies": N_STUDIES, "trials_per_study": N_TRIALS},
        "finished_study": {"trials": 2 if args.tiny else 6, "trained": True},
        "commands": commands,
        "target_s": TARGET_S,
        "read_target_s": READ_TARGET_S,
        "met": all(record["met"] for record in targeted),
    }
    _common.emit("cli_startup", args, result)


if __name__ == "__main__":
    main()
