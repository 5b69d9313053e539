"""Trainer overhead: seconds per optimisation step of edgesearch's trainer against a bare loop.

Both run on the same model, batches (in memory) and device, in turns; the ratio is the median of
the per-round ratios. With ``edge_lambda = 0`` and ``round_ratio = 0`` the trainer computes the same loss
as the bare loop, so any difference is its own bookkeeping: per-step lr schedule, NaN guard,
callbacks. Target: ratio <= 1.05.

    python benchmarks/trainer_overhead.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _step

TARGET = 1.05


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import torch

    torch.manual_seed(0)
    setup = _step.Setup(**_step.SIZES["tiny" if args.tiny else "full"], device="cpu")
    data = _step.batches(setup)
    bare_model, es_model = _step.models(setup, 2)
    variants = {
        "bare": _step.bare_step_runner(bare_model, data),
        "edgesearch": _step.edgesearch_step_runner(
            es_model, data, _step.train_config(setup, edge_lambda=0.0, round_ratio=0.0)
        ),
    }
    _common.log(f"trainer overhead: {setup}")
    samples = _common.alternate(variants, rounds=setup.rounds)
    medians = {name: _common.median(values) for name, values in samples.items()}
    value = _common.paired_ratio(samples, "edgesearch", "bare")
    _common.log(f"step s: bare {medians['bare']:.4f}, edgesearch {medians['edgesearch']:.4f}, ratio {value:.3f}")
    _common.emit(
        "trainer_overhead",
        args,
        {
            "setup": setup.__dict__,
            "seconds_per_step": {"median": medians, "samples": samples},
            "ratio": value,
            "ratio_definition": "median over rounds of the two variants' step times in that round",
            "ratio_of_medians": _common.ratio(medians["edgesearch"], medians["bare"]),
            "target": f"<= {TARGET}",
            "met": value is not None and value <= TARGET,
        },
    )


if __name__ == "__main__":
    main()
