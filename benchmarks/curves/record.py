"""Record the learning-curve table: every configuration of ``configs.py`` x seed, trained for real.

Each run is edgesearch's own ``train()`` on the nuclei at native resolution (``configs.trainer_config``)
and gives one line of the table, a JSON object::

    {"id": "d07", "seed": 0, "params": {...}, "val_iou": [...], "val_boundary_iou": [...], "seconds": [...]}

with one value per epoch (``seconds`` is the epoch's wall time, validation included). Lines are appended
as runs finish, so an interrupted recording loses at most the runs in flight and a second call records
only what is missing (``--limit N`` stops after N more runs: a table can be recorded in chunks). Runs go in
the order of ``configs.configurations()`` (the designed block first), ``--jobs`` at a time, each process on
one math thread.

    python benchmarks/curves/record.py [--jobs 2] [--limit N] [--tiny] [--out benchmarks/curves/nuclei.jsonl]

``--tiny`` records 2 configurations x 1 seed x 2 epochs into the given file (a smoke test). On a GPU box
``--device cuda`` records the same runs faster (the table then says so in ``nuclei.meta.json``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import _common  # noqa: E402  (puts the repository root on the path)

from curves import configs  # noqa: E402

TABLE = HERE / "nuclei.jsonl"
DECIMALS = 4


def done(path: Path) -> set[tuple[str, int]]:
    """(id, seed) of the runs already in the table at ``path``."""
    if not path.is_file():
        return set()
    keys = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            keys.add((row["id"], int(row["seed"])))
    return keys


def run_one(task: tuple[str, dict[str, Any], int, int, str, str]) -> dict[str, Any]:
    """Train one configuration with one seed; its line of the table."""
    config_id, params, seed, epochs, root, device = task
    import torch

    torch.set_num_threads(1)
    from edgesearch.trainer.callbacks import Callback
    from edgesearch.trainer.config import TrainConfig
    from edgesearch.trainer.loop import train
    from edgesearch.trainer.records import EpochRecord

    records: list[EpochRecord] = []

    class Keep(Callback):
        def on_epoch_end(self, record: EpochRecord) -> None:
            records.append(record)

    raw = configs.trainer_config(params, root=root, seed=seed, epochs=epochs)
    raw["device"] = device
    train(TrainConfig.model_validate(raw), callbacks=[Keep()])
    return {
        "id": config_id,
        "seed": seed,
        "params": params,
        "val_iou": [round(r["val_iou"], DECIMALS) for r in records],
        "val_boundary_iou": [round(r["val_boundary_iou"], DECIMALS) for r in records],
        "seconds": [round(r["seconds"], 3) for r in records],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=TABLE)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="record at most this many more runs")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="2 configurations x 1 seed x 2 epochs")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from edgesearch.sample_data import cache_dir, write_whole

    root = str(write_whole(cache_dir() / "nuclei-whole"))
    table = configs.configurations()
    seeds, epochs = configs.SEEDS, configs.EPOCHS
    if args.tiny:
        table, seeds, epochs = dict(list(table.items())[:2]), (0,), 2
    have = done(args.out)
    tasks = [
        (config_id, params, seed, epochs, root, args.device)
        for config_id, params in table.items()
        for seed in seeds
        if (config_id, seed) not in have
    ][: args.limit]
    _common.log(f"{len(have)} runs recorded, {len(tasks)} to record, {args.jobs} at a time -> {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = args.out.with_suffix(".meta.json")
    if not meta.is_file():
        facts = {"machine": platform.platform(), "cpu_count": os.cpu_count(), "device": args.device}
        meta.write_text(json.dumps({**facts, "epochs": epochs, "seeds": list(seeds)}, indent=2) + "\n")
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.jobs, maxtasksperchild=8) as pool, args.out.open("a", encoding="utf-8") as out:
        for count, row in enumerate(pool.imap_unordered(run_one, tasks), start=1):
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            out.flush()
            elapsed = time.perf_counter() - started
            left = elapsed / count * (len(tasks) - count)
            _common.log(
                f"[{count}/{len(tasks)}] {row['id']} seed {row['seed']}: best val IoU {max(row['val_iou']):.3f}, "
                f"{sum(row['seconds']):.0f} s; {elapsed / 60:.1f} min, about {left / 60:.0f} min left"
            )


if __name__ == "__main__":
    main()
