"""The search measured on real learning curves: edgesearch's default against what a user would otherwise run.

The table (``benchmarks/curves/nuclei.jsonl``, recorded by ``benchmarks/curves/record.py``: U-Net/mobilenet_v2
on the nuclei at native resolution, 150 configurations of the report's knobs x 2 seeds x 30 epochs) answers
every trial of a replayed study (``curves/replay.py``): the real sampler, the real pruner, simulated time from
the recorded seconds, 1 and 16 asynchronous workers. Each strategy of ``curves/strategies.py`` is replayed
``--replays`` times (sampler seed and curve draws by replay).

Per strategy and worker count:

- **GPU-seconds to the best**: the simulated GPU time (workers x clock) until the study's best trial is a
  configuration whose true mean is within one seed sigma of the table's best (``Table.good``); a replay that
  never gets there within the budget counts as never (the median is then "not reached" if over half do not);
- **GPU-seconds to the top 5**: the same, for a configuration among the table's :data:`TOP` best true means (a
  stricter target: on a flat landscape many configurations lie within one seed sigma of the best);
- **regret** at a budget of 25 trainings: the table's best true mean less the true mean of the study's best
  trial's configuration;
- **best pruned**: the share of replays in which a trial of the table's best configuration was pruned.

Targets: edgesearch's default reaches the best in <= 0.5x the median GPU-seconds of Optuna's defaults and
<= 0.33x of random search, at 1 and at 16 workers, and prunes the best configuration in <= 5% of replays.

The rules of choosing (``edgesearch.searcher.study.choosing``) are measured on edgesearch's default replays:
how often each picks a configuration within one seed sigma of the best, at 25 trainings (the confirmed mean
re-trains the top 3 with the other seed: 3 more trainings, not counted in the budget).

Before any number counts, the replay of edgesearch's default at one worker is checked against the real worker
loop (``run_worker`` on a SQLite study with ``ReplayRunner``): the same trials, parameters, states and values.

    python benchmarks/search.py [--tiny] [--replays 100] [--jobs 2] [--table FILE] [--json FILE]
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
from curves import configs, designed, strategies
from curves.replay import Finished, ReplayedTrial, ReplayRunner, simulate
from curves.table import Table, load_table

TABLE = Path(__file__).resolve().parent / "curves" / "nuclei.jsonl"
WORKERS = (1, 16)
BUDGET_TRIALS = 100
"""The longest a replay runs to reach the best: the GPU time of this many whole trainings (the table's mean)."""
REGRET_TRIALS = 25
"""The budget at which regret and the rules of choosing are measured, in whole trainings. A replay stops once
it has reached the best and run this long (what happens after changes neither number)."""
TARGETS = {"Optuna defaults (TPE + MedianPruner)": 0.5, "random, no pruning": 0.33}
BEST_PRUNED_TARGET = 0.05
TOP = 5
"""The stricter target: one of the table's TOP best configurations by true mean."""
OURS = "edgesearch default"
CHECK_TRIALS = 40
SIZES = {"full": {"replays": 100}, "tiny": {"replays": 2}}


def _table(path: Path) -> Table:
    return load_table(path, configs.SPACE).complete_only(len(configs.SEEDS))


def _top_k(table: Table, config: Any, *, workers: int, seed: int, budget: float) -> list[Finished]:
    """Rounds of FIRST random configurations one epoch each, then the TOP_K best of the round to the end."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    free = [0.0] * workers
    out: list[Finished] = []
    while min(free) < budget:
        firsts = []
        for _ in range(strategies.FIRST):
            replayed = ReplayedTrial.start(study.ask(), config, table, seed, prune=False)
            w = free.index(min(free))
            start, free[w] = free[w], free[w] + replayed.curve.seconds[0]
            firsts.append((replayed, start, free[w]))
        free = [max(free)] * workers
        ranked = sorted(firsts, key=lambda item: -item[0].curve.val_iou[0])
        for rank, (replayed, start, end) in enumerate(ranked):
            state = TrialState.COMPLETE if rank < strategies.TOP_K else TrialState.PRUNED
            if state == TrialState.COMPLETE:
                w = free.index(min(free))
                end = free[w] = free[w] + sum(replayed.curve.seconds[1:])
            epochs = replayed.epochs if state == TrialState.COMPLETE else 1
            value = replayed.curve.value if state == TrialState.COMPLETE else None
            p = dict(replayed.trial.params)
            number = replayed.trial.number
            out.append(Finished(number, replayed.config_id, replayed.curve.seed, state, value, epochs, start, end, p))
        free = [max(free)] * workers
    return sorted((f for f in out if f.end <= budget), key=lambda f: f.end)


def replay_once(task: tuple[str, int, int, str]) -> dict[str, Any]:
    """One replay of one strategy: what it reached and when, and each rule's pick at the budget."""
    name, workers, seed, table_path = task
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = _table(Path(table_path))
    settings = {**strategies.STRATEGIES, **strategies.CANDIDATES}[name]
    config = strategies.study_config(f"replay-{seed}", settings, seed=seed)
    full = statistics.fmean(sum(c.seconds) for runs in table.curves.values() for c in runs)
    budget = BUDGET_TRIALS * full / workers  # on the simulated clock
    regret_at = REGRET_TRIALS * full / workers
    reached: float | None = None
    reached_top: float | None = None
    top = table.top(TOP)
    best_value = -math.inf

    def watch(f: Finished, _: Any = None) -> bool:
        """Note when the study's best trial first is a good configuration; True once nothing more is to learn."""
        nonlocal reached, reached_top, best_value
        if f.value is not None and f.value > best_value:
            best_value = f.value
            if reached is None and f.config_id in table.good:
                reached = f.end * workers
            if reached_top is None and f.config_id in top:
                reached_top = f.end * workers
        return reached is not None and reached_top is not None and f.end >= regret_at

    started = time.perf_counter()
    if settings.get("top_k"):
        planned = _top_k(table, config, workers=workers, seed=seed, budget=budget)
        finished = []
        for f in planned:
            finished.append(f)
            if watch(f):
                break
    else:
        study = strategies.make_study(f"replay-{seed}", settings, config, seed=seed)
        finished = simulate(
            table, config, study, workers=workers, seed=seed, budget_seconds=budget, on_finish=watch
        ).finished
    complete = [f for f in finished if f.value is not None and f.end <= regret_at]
    incumbent = max(complete, key=lambda f: f.value or 0.0, default=None)
    return {
        "strategy": name,
        "workers": workers,
        "seed": seed,
        "reached_gpu_seconds": reached,
        "reached_top_gpu_seconds": reached_top,
        "regret": None if incumbent is None else table.regret(incumbent.config_id),
        "trials": len(finished),
        "complete": len(complete),
        "best_pruned": any(f.config_id == table.best and f.value is None for f in finished),
        "good_pruned": any(f.config_id in table.good and f.value is None for f in finished),
        "rules": rules(table, complete, seed) if name == OURS else None,
        "replay_seconds": time.perf_counter() - started,
    }


def rules(table: Table, complete: list[Finished], seed: int) -> dict[str, bool] | None:
    """Whether each rule of choosing picks a configuration of ``table.good`` from the complete trials."""
    from edgesearch.searcher.study import choosing

    if not complete:
        return None
    top = sorted(complete, key=lambda f: -(f.value or 0.0))[:3]
    candidates = []
    for f in complete:
        others = tuple(c.value for c in table.curves[f.config_id] if c.seed != f.seed) if f in top else ()
        point = choosing.unit_point(f.params, configs.SPACE)
        candidates.append(choosing.Candidate(f.number, float(f.value or 0.0), others, point))
    by_number = {f.number: f for f in complete}
    picks = {
        "highest": choosing.highest(candidates),
        "confirmed mean": choosing.confirmed_mean(candidates),
        "shrinkage": choosing.shrinkage(candidates, noise_sd=table.seed_sigma),
    }
    return {rule: by_number[c.number].config_id in table.good for rule, c in picks.items()}


def same_trials(table_path: Path, n_trials: int) -> dict[str, Any]:
    """edgesearch's default replayed by :func:`simulate` at one worker against the real worker loop."""
    import optuna

    from edgesearch.searcher.run.worker import run_worker
    from edgesearch.searcher.study.studies import create_study

    table = _table(table_path)
    settings = strategies.STRATEGIES[OURS]
    config = strategies.study_config("replay-check", settings, seed=7).model_copy(update={"n_trials": n_trials})
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'check.db'}"
        create_study(config, url)
        run_worker(
            config.name, url, runs_dir=Path(tmp) / "runs", poll_seconds=0.05, trial_runner=ReplayRunner(table, 7)
        )
        real = optuna.load_study(study_name=config.name, storage=url).get_trials(deepcopy=False)
    study = strategies.make_study("replay-check", settings, config, seed=7)
    simulate(table, config, study, workers=1, seed=7, n_trials=n_trials)

    def rows(trials: list[Any]) -> list[tuple[Any, ...]]:
        return [
            (t.number, t.state.name, t.value, t.intermediate_values, t.params, t.user_attrs["replayed"]) for t in trials
        ]

    same = rows(real) == rows(study.get_trials(deepcopy=False))
    return {"trials": n_trials, "same": same, "pruned": sum(t.state.name == "PRUNED" for t in real)}


def _ratios(per: dict[str, Any], key: str) -> dict[str, float | None]:
    """edgesearch's default's median over each target strategy's (None where either never got there)."""
    ours = per.get(OURS, {}).get(key)
    return {
        other: None if ours is None or per.get(other, {}).get(key) is None else ours / per[other][key]
        for other in TARGETS
    }


def summarize(rows: list[dict[str, Any]], table: Table) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for workers in WORKERS:
        per: dict[str, Any] = {}
        for name in [*strategies.STRATEGIES, *strategies.CANDIDATES]:
            mine = [r for r in rows if r["strategy"] == name and r["workers"] == workers]
            if not mine:
                continue
            times = [r["reached_gpu_seconds"] if r["reached_gpu_seconds"] is not None else math.inf for r in mine]
            median = statistics.median(times)
            top_times = [
                math.inf if r["reached_top_gpu_seconds"] is None else r["reached_top_gpu_seconds"] for r in mine
            ]
            median_top = statistics.median(top_times)
            per[name] = {
                "replays": len(mine),
                "median_gpu_seconds": None if math.isinf(median) else median,
                "reached": sum(not math.isinf(t) for t in times) / len(times),
                "median_gpu_seconds_top": None if math.isinf(median_top) else median_top,
                "reached_top": sum(not math.isinf(t) for t in top_times) / len(top_times),
                "mean_regret": statistics.fmean(
                    r["regret"]
                    if r["regret"] is not None
                    else table.regret(min(table.true_mean, key=table.true_mean.get))
                    for r in mine
                ),
                "best_pruned": sum(r["best_pruned"] for r in mine) / len(mine),
                "good_pruned": sum(r["good_pruned"] for r in mine) / len(mine),
                "mean_trials": statistics.fmean(r["trials"] for r in mine),
            }
        ratios, ratios_top = _ratios(per, "median_gpu_seconds"), _ratios(per, "median_gpu_seconds_top")
        met = (
            all(ratios[o] is not None and ratios[o] <= t for o, t in TARGETS.items())
            and per.get(OURS, {}).get("best_pruned", 1.0) <= BEST_PRUNED_TARGET
        )
        ruled = [r["rules"] for r in rows if r["workers"] == workers and r["rules"]]
        choosing = {rule: sum(r[rule] for r in ruled) / len(ruled) for rule in ruled[0]} if ruled else {}
        out[str(workers)] = {
            "strategies": per,
            "ratios": ratios,
            "ratios_top": ratios_top,
            "met": met,
            "rules_pick_good": choosing,
        }
    return out


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--replays", type=int, default=None)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--table", type=Path, default=TABLE)
    p.add_argument("--candidates", action="store_true", help="also replay the settings tried as edgesearch's default")
    p.add_argument("--effects-only", action="store_true", help="print the designed block's effects; no replay")
    p.add_argument("--only", action="append", help="replay only this strategy or candidate (repeatable)")
    args = p.parse_args()
    size = SIZES["tiny" if args.tiny else "full"]
    replays = args.replays or size["replays"]
    table = _table(args.table)
    _common.log(
        f"search: table of {len(table.curves)} configurations, best {table.best} ({table.true_mean[table.best]:.4f}),"
        f" seed sigma {table.seed_sigma:.4f}, {len(table.good)} within one sigma"
    )
    fine_tuning = {
        "30 epochs": designed.effects(table),
        "10 epochs": designed.effects(table, 10),
        "30 epochs, Boundary IoU": designed.effects(table, metric="val_boundary_iou"),
    }
    for epochs, groups in fine_tuning.items():
        for group, levels in groups.items():
            for level, e in levels.items():
                effect = "-" if e["effect"] is None else f"{e['effect']:+.4f}"
                se = "-" if e["se"] is None else f"{e['se']:.4f}"
                _common.log(f"  {epochs}, {group}: {level}: {effect} +- {se} ({e['cells']} cells)")
    random_block = designed.random_levels(table)
    for question, levels in random_block.items():
        shown = ", ".join(
            f"{level} {r['mean']:.4f} +- {r['se'] or 0:.4f} ({r['n']})" for level, r in levels.items() if r["mean"]
        )
        _common.log(f"  random block, {question}: {shown}")
    if args.effects_only:
        return
    check = same_trials(args.table, 4 if args.tiny else CHECK_TRIALS)
    _common.log(f"search: the replay at one worker gives the real worker loop's trials back: {check['same']}")
    if not check["same"]:
        raise SystemExit("search: the replay does not match the real worker loop; no numbers are reported")
    names = [*strategies.STRATEGIES, *(strategies.CANDIDATES if args.candidates else [])]
    if args.only:
        wanted = list(args.only)
        unknown = sorted(set(wanted) - {*strategies.STRATEGIES, *strategies.CANDIDATES})
        if unknown:
            raise SystemExit(
                f"search: --only: unknown {unknown}; allowed: {[*strategies.STRATEGIES, *strategies.CANDIDATES]}"
            )
        names = wanted
    tasks = [(name, workers, seed, str(args.table)) for workers in WORKERS for name in names for seed in range(replays)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
        rows = []
        for count, row in enumerate(pool.imap_unordered(replay_once, tasks), start=1):
            rows.append(row)
            if count % 50 == 0 or count == len(tasks):
                _common.log(f"  {count}/{len(tasks)} replays, {time.perf_counter() - started:.0f} s")
    summary = summarize(rows, table)
    for workers, s in summary.items():
        _common.log(f"{workers} worker(s):")
        for name, r in s["strategies"].items():
            med = "not reached" if r["median_gpu_seconds"] is None else f"{r['median_gpu_seconds'] / 3600:.2f} GPU-h"
            top = "not reached" if r["median_gpu_seconds_top"] is None else f"{r['median_gpu_seconds_top'] / 3600:.2f}"
            _common.log(
                f"  {name:40s} {med:>12s}  reached {r['reached']:.0%}  top {TOP} {top:>11s} ({r['reached_top']:.0%})"
                f"  regret {r['mean_regret']:.4f}  "
                f"best pruned {r['best_pruned']:.0%}  ({r['mean_trials']:.0f} trials)"
            )
        _common.log(f"  ratios: {s['ratios']}  to the top {TOP}: {s['ratios_top']}  met: {s['met']}")
        _common.log(f"  rules pick a good configuration: {s['rules_pick_good']}")
    _common.emit(
        "search",
        args,
        {
            "table": {
                "configurations": len(table.curves),
                "best": table.best,
                "best_true_mean": table.true_mean[table.best],
                "seed_sigma": table.seed_sigma,
                "good": sorted(table.good),
                "top": sorted(table.top(TOP)),
            },
            "replays": replays,
            "fine_tuning": fine_tuning,
            "random_block": random_block,
            "budget_trials": BUDGET_TRIALS,
            "regret_trials": REGRET_TRIALS,
            "replay_matches_worker": check,
            "results": summary,
            "met": all(s["met"] for s in summary.values()),
        },
    )


if __name__ == "__main__":
    main()
