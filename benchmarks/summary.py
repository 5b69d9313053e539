"""Print the BENCHMARKS.md table from the JSON results of ``make bench``.

python benchmarks/summary.py [RESULTS_DIR]      (default: benchmarks/results)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, Any]


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def trainer_overhead(r: dict[str, Any]) -> list[Row]:
    m = r["seconds_per_step"]["median"]
    measured = f"{_f(r['ratio'], '.3f')} ({m['edgesearch']:.3f} s vs {m['bare']:.3f} s per step)"
    return [("Trainer overhead vs bare loop (λ=0, r=0)", r["target"], measured, r["met"])]


def edge_cost(r: dict[str, Any]) -> list[Row]:
    m = r["seconds_per_step"]["median"]
    measured = f"{_f(r['ratio'], '.3f')} ({m['edge']:.3f} s vs {m['plain']:.3f} s per step)"
    rows: list[Row] = [("Edge-awareness cost (λ=0.15, r=0.2, w=2 vs off)", r["target"], measured, r["met"])]
    if "ratio_soft" in r:  # results written before the soft profile existed have no such row
        soft = f"{_f(r['ratio_soft'], '.3f')} ({m['soft']:.3f} s vs {m['plain']:.3f} s per step)"
        rows.append(("Edge-awareness cost, soft profile (λ=0.15, r=0.2, w=2 vs off)", r["target"], soft, r["met"]))
    return rows


def checkpoint_cost(r: dict[str, Any]) -> list[Row]:
    share = r["share"]
    measured = (
        f"{100 * share['default (60 s)']:.2f}% of epoch time (every epoch: {100 * share['every epoch']:.2f}%; "
        f"a synchronous write was {r['synchronous_write_seconds']:.2f} s per {r['epoch_seconds']:.2f} s epoch)"
    )
    return [("Checkpoint wait per epoch at 64 px", r["target"], measured, r["met"])]


def end_to_end(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    # Results from before patch training compared images resized to a square.
    unit = "patches of {} px" if r["setup"].get("mode") == "patches" else "{} px"
    for size, item in r["results"].items():
        m = item["median_seconds"]
        target = r["target"].removesuffix(" at 64 px") if size == "64" else "(information)"
        measured = f"{item['ratio']:.3f} ({m['edgesearch']:.1f} s vs {m['bare']:.1f} s per process)"
        rows.append(
            (
                f"End to end, `edgesearch train` vs bare process, {unit.format(size)}",
                target,
                measured,
                r["met"] if size == "64" else None,
            )
        )
    return rows


def trial_overhead(r: dict[str, Any]) -> list[Row]:
    value = r["median_after_first"]
    first = r["overhead_seconds"][min(r["overhead_seconds"], key=int)]
    measured = f"{_f(value, '.2f')} s per trial (the first, with the imports: {first:.2f} s)"
    parts = r.get("median_parts_after_first")
    if parts:
        measured += "; " + ", ".join(f"{name.replace('_', ' ')} {seconds:.2f}" for name, seconds in parts.items())
    return [("Trial overhead in a worker, quickstart size", r["target"], measured, r["met"])]


def disk_use(r: dict[str, Any]) -> list[Row]:
    parts = ", ".join(f"{name} {value / 1e6:.1f}" for name, value in r["bytes"].items())
    measured = (
        f"{_f(r['mb_per_finished_trial'], '.1f')} MB per finished trial ({r['finished']} finished; MB in all: {parts})"
    )
    kept = r["keep_checkpoints"]
    rows: list[Row] = [("Disk per finished trial, quickstart study", r["target"], measured, r["met"])]
    rows.append(
        (
            f"Disk per finished trial, quickstart study, keep_checkpoints {kept['keep']}",
            "(information)",
            f"{_f(kept['mb_per_finished_trial'], '.1f')} MB ({kept['removed']} best.pt removed)",
            None,
        )
    )
    return rows


def input_pipeline(r: dict[str, Any]) -> list[Row]:
    measured = (
        f"{_f(r['ratio'], '.1f')}x ({r['loader_images_per_s']:.0f} vs {r['step_images_per_s']:.1f} images/s); "
        f"data wait {100 * r['data_wait_share_of_epoch']:.1f}% of an epoch"
    )
    rows: list[Row] = [("Input pipeline at 256 px: loader / step", r["target"], measured, r["met"])]
    device = r.get("device_path")
    if device:
        rows.append(
            (
                f"Input pipeline at 256 px: device path on {device['device']} / CPU path (2 processes)",
                "(information)",
                f"{_f(device['over_cpu_path'], '.1f')}x ({device['images_per_s']:.0f} vs "
                f"{r['loader_images_per_s']:.0f} images/s; made resident in {device['resident_seconds']:.2f} s)",
                None,
            )
        )
    return rows


def coordination(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    target = "< 0.5% of a 1-min trial of 30 epochs"
    for backend, item in r.get("overhead", {}).items():
        if "skipped" in item:
            rows.append((f"Storage overhead per trial, {backend}", target, item["skipped"], None))
            continue
        share = item.get("overhead_fraction_of_1min_trial")
        measured = (
            f"{100 * share:.2f}% ({1000 * item['median_seconds']:.0f} ms per trial)" if share is not None else "-"
        )
        rows.append((f"Storage overhead per trial, {backend}", target, measured, item.get("met")))
    scale = r.get("scale", {})
    if "skipped" in scale:
        rows.append(("Coordination at scale", "-", scale["skipped"], None))
        return rows
    counts = scale.get("counts", {})
    if not counts:
        return rows
    top = max(counts, key=int)
    per = ", ".join(
        f"{n}: {c['coordination_cpu_ms_per_trial']:.0f} ({c['worker_cpu_ms_per_trial']:.0f} + "
        f"{c['server_cpu_ms_per_trial']:.0f})"
        for n, c in counts.items()
    )
    flat = scale.get("flat_top_vs_16")
    rows.append(
        (
            "Coordination CPU per trial by workers (worker + server ms), pooler, workers started 0.3 s apart",
            scale["targets"]["cpu"] + "; " + scale["targets"]["flat"],
            f"{per}; {top} vs 16: {_f(flat, '.2f')}x",
            scale["met"]["cpu"] and scale["met"]["flat"],
        )
    )
    at_top = counts[top]
    lost = sum(c["lost"] for c in counts.values())
    dup = sum(c["duplicated"] for c in counts.values())
    errors = sum(c["connection_errors"] for c in counts.values())
    rows.append(
        (
            f"{top} workers on PostgreSQL with max_connections {scale['max_connections']}",
            scale["targets"]["connections"] + "; " + scale["targets"]["clean"],
            f"peak {at_top['peak_server_connections']} server connections (pool {scale['pool_size']}); "
            f"lost {lost}, duplicated {dup}, connection errors {errors}",
            scale["met"]["connections"] and scale["met"]["clean"],
        )
    )
    once = ", ".join(
        f"{n}: {c['worker_startup_cpu_ms_per_worker']:.0f} + {c['worker_tail_cpu_ms_per_worker']:.0f}"
        for n, c in counts.items()
    )
    rows.append(("Per worker, once: start-up + tail CPU ms, by workers", "(information)", once, None))
    trips = ", ".join(f"{n}: {c['round_trips_per_trial']:.0f}" for n, c in counts.items())
    speed = ", ".join(f"{n}: {c['trials_per_minute']:.0f}" for n, c in counts.items())
    rows.append(("Round trips per trial, and trials/min, by workers", "(information)", f"{trips}; {speed}", None))
    burst = scale.get("burst")
    if burst:
        b = burst
        clean = b["lost"] == 0 and b["duplicated"] == 0 and b["connection_errors"] == 0 and b["all_exited_0"]
        measured = (
            f"{b['finished']}/{b['n_trials']} finished; CPU per trial {b['worker_cpu_ms_per_trial']:.0f} + "
            f"{b['server_cpu_ms_per_trial']:.0f} ms (worker lifetime {b['worker_lifetime_cpu_ms_per_trial']:.0f}; "
            f"machine {100 * (b['machine_cpu_busy'] or 0):.0f}% busy); {b['round_trips_per_trial']:.0f} round trips "
            f"per trial; lost {b['lost']}, duplicated {b['duplicated']}, connection errors {b['connection_errors']}"
        )
        rows.append(
            (f"{b['workers']} workers released at one instant, 1-s trials", scale["targets"]["clean"], measured, clean)
        )
    return rows


def search(r: dict[str, Any]) -> list[Row]:
    t = r["table"]
    rows: list[Row] = [
        (
            "Search replay: the simulation at 1 worker gives the real worker loop's trials back",
            "the same trials",
            f"{r['replay_matches_worker']['trials']} trials, same: {r['replay_matches_worker']['same']}",
            r["replay_matches_worker"]["same"],
        )
    ]
    for workers, item in r["results"].items():
        ours = item["strategies"].get("edgesearch default", {})
        ratios = ", ".join(f"{v:.2f}x {k}" if v is not None else f"- {k}" for k, v in item["ratios"].items())
        rows.append(
            (
                f"Search on {t['configurations']} real curve configurations, {workers} worker(s): GPU-seconds to a "
                f"configuration within one seed sigma of the best, edgesearch's default against",
                "<= 0.5x Optuna defaults, <= 0.33x random; best pruned <= 5%",
                f"{ratios}; best pruned in {100 * ours.get('best_pruned', 0):.0f}% of {r['replays']} replays",
                item["met"],
            )
        )
        top = ", ".join(f"{v:.2f}x {k}" if v is not None else f"- {k}" for k, v in item.get("ratios_top", {}).items())
        rows.append(
            (
                f"Search, {workers} worker(s): GPU-seconds to one of the 5 best configurations, edgesearch's "
                f"default against",
                "(information)",
                f"{top}; reached in {100 * ours.get('reached_top', 0):.0f}% of replays",
                None,
            )
        )
        picks = ", ".join(f"{k} {100 * v:.0f}%" for k, v in item["rules_pick_good"].items())
        rows.append(
            (f"Choosing the best ({workers} worker(s)): picks within one seed sigma", "(information)", picks, None)
        )
    return rows


def cli_startup(r: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, item in r["commands"].items():
        if "skipped" in item:
            rows.append((f"CLI start-up: `{name}`", "-", item["skipped"], None))
            continue
        target = f"< {item['target_s']} s" if item.get("target_s") else "(information)"
        rows.append((f"CLI start-up: `{name}`", target, f"{item['median_s']:.2f} s", item.get("met")))
    return rows


def gpu(r: dict[str, Any]) -> list[Row]:
    if "skipped" in r:
        return [("GPU: 512 px resnet34-Unet, bf16 + channels_last vs fp32", "(record the card)", r["skipped"], None)]
    measured = ", ".join(f"{k} {v:.0f} images/s" for k, v in r["images_per_s"].items())
    rows: list[Row] = [(f"GPU ({r['card']}): 512 px resnet34-Unet", "(record the card)", measured, None)]
    trials = r.get("trials")
    if trials:
        per_k = ", ".join(f"K={row['k']}: {row['trials_per_hour']:.0f}" for row in trials["per_gpu"])
        loaders = ", ".join(f"{name} {row['median_epoch_s']:.2f} s" for name, row in trials["loader"].items())
        rows.append((f"GPU ({r['card']}): trials/hour with K workers per GPU", "(information)", per_k, None))
        rows.append((f"GPU ({r['card']}): epoch time, data.loader cpu vs device", "(information)", loaders, None))
    return rows


def method(r: dict[str, Any]) -> list[Row]:
    if r.get("tiny") or not r.get("verdicts"):
        return [("Method on real nuclei", "-", "tiny run only", None)]
    bare = r["verdicts"]["defaults_vs_bare"]
    region = r["verdicts"]["recommended_vs_lambda_0"]
    name, worst = min(region["settings"].items(), key=lambda item: item[1]["mean"] - item[1]["lambda_0"])
    return [
        (
            "Method on real nuclei: trainer defaults vs bare smp loop (best val IoU, 3 seeds)",
            bare["target"],
            f"{bare['defaults']:.3f} vs {bare['bare']:.3f}",
            bare["met"],
        ),
        (
            "Method on real nuclei: report's region vs lambda 0",
            "within the seed spread",
            f"weakest {name}: {worst['mean']:.3f} vs {worst['lambda_0']:.3f} (spread {worst['spread']:.3f})",
            region["met"],
        ),
    ]


def edge_correlation(r: dict[str, Any]) -> list[Row]:
    runs = r["runs"]
    both = ", ".join(
        f"seed {run['seed']}: {run['edge_corr_probabilities']:.3f} vs {run['edge_corr_thresholded']:.3f} "
        f"(Spearman {run['spearman_with_iou_probabilities']:.2f} vs {run['spearman_with_iou_thresholded']:.2f})"
        for run in runs
    )
    return [
        ("Edge correlation: on probabilities vs thresholded (per-image Spearman with IoU)", "(information)", both, None)
    ]


def sliding_window(r: dict[str, Any]) -> list[Row]:
    setup, rate = r["setup"], r["megapixels_per_s"]
    measured = (
        f"{_f(r['ratio'], '.3f')} ({rate['edgesearch']:.3f} vs {rate['monai']:.3f} Mpx/s); "
        f"max abs difference {r['max_abs_difference']:.1e}; tta {r['tta_slowdown']:.2f}x slower"
    )
    label = (
        f"Sliding window, {setup['height']}x{setup['width']}, window {setup['window']}, CPU: "
        "edgesearch / MONAI direct (time)"
    )
    imported = f"{r['monai_import_seconds']['median']:.1f} s"
    return [
        (label, r["target"], measured, r["met"]),
        ("Importing monai.inferers after torch (the sliding window's first call)", "(information)", imported, None),
    ]


def onnx_predict(r: dict[str, Any]) -> list[Row]:
    setup, m, p = r["setup"], r["seconds"]["median"], r["process_seconds"]["median"]
    measured = (
        f"{_f(r['ratio'], '.3f')} ({m['onnxruntime']:.2f} s vs {m['pytorch']:.2f} s per image); "
        f"max abs difference {r['max_abs_difference']:.1e}"
    )
    label = (
        f"ONNX predict, {setup['height']}x{setup['width']}, window {setup['window']}, CPU, {setup['threads']} "
        "thread(s): onnxruntime / PyTorch (time)"
    )
    process = f"{p['onnxruntime']:.1f} s vs {p['pytorch']:.1f} s (export: {r['export_seconds']:.1f} s)"
    return [
        (label, r["target"], measured, r["met"]),
        ("A whole `predict` process on that image: `--onnx` vs `--checkpoint`", "(information)", process, None),
    ]


def native_resolution(r: dict[str, Any]) -> list[Row]:
    results, targets, met = r["results"], r["targets"], r["met"]
    epochs, seeds = r["setup"]["epochs"], len(r["setup"]["seeds"])

    def iou(name: str) -> str:
        entry = results[name]["val"]["iou"]
        return f"{entry['mean']:.3f} ± {entry['std']:.3f}"

    rows: list[Row] = [
        (
            f"Native resolution on whole nuclei images ({epochs} epochs, {seeds} seeds): IoU of the 128x512 "
            "validation image, native (patches 128 + sliding window) vs tiles vs squash",
            f"native {targets['native_iou']} and {targets['native_vs_tiles']}",
            f"{iou('native')} vs {iou('tiles')} vs {iou('squash')}",
            met["native_iou"] and met["native_vs_tiles"],
        )
    ]
    boundary = " vs ".join(f"{results[n]['val']['boundary_iou']['mean']:.3f}" for n in ("native", "tiles", "squash"))
    rows.append(("Native resolution: Boundary IoU, native vs tiles vs squash", "(information)", boundary, None))
    small = " vs ".join(f"{results[n]['val']['recall']['< 64']['share']:.2f}" for n in ("native", "tiles", "squash"))
    rows.append(
        ("Native resolution: recall of nuclei under 64 px, native vs tiles vs squash", "(information)", small, None)
    )
    tta = results["native"].get("tta")
    if tta:
        rows.append(
            (
                "Native resolution: flip TTA on the native model (time, IoU gain)",
                "(information)",
                f"{tta['time_ratio']:.2f}x the time, IoU {tta['iou_gain']:+.4f}",
                None,
            )
        )
    share = r["validation_share"]
    rows.append(
        (
            "Validation by sliding window: share of an epoch (patch 128; the nuclei study in patch mode, patch 256)",
            targets["validation_share"],
            f"{_percent(share['native (patch 128)'])}; {_percent(share['nuclei study, patch mode (patch 256)'])}",
            met["validation_share"],
        )
    )
    return rows


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


RENDER: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "trainer_overhead": trainer_overhead,
    "edge_cost": edge_cost,
    "checkpoint_cost": checkpoint_cost,
    "end_to_end": end_to_end,
    "trial_overhead": trial_overhead,
    "disk_use": disk_use,
    "input_pipeline": input_pipeline,
    "coordination": coordination,
    "cli_startup": cli_startup,
    "gpu": gpu,
    "edge_correlation": edge_correlation,
    "sliding_window": sliding_window,
    "onnx_predict": onnx_predict,
    "native_resolution": native_resolution,
    "method": method,
    "search": search,
}


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"
    print("| Benchmark | Target | Measured | Met |")
    print("|---|---|---|---|")
    for name, render in RENDER.items():
        path = folder / f"{name}.json"
        if not path.exists():
            print(f"| {name} | | not run | |")
            continue
        for label, target, measured, met in render(json.loads(path.read_text(encoding="utf-8"))):
            mark = "-" if met is None else ("yes" if met else "**no**")
            print(f"| {label} | {target} | {measured} | {mark} |")


if __name__ == "__main__":
    main()
