"""Edge-awareness cost: step time with the edge and rounded terms on against both off.

``edge_lambda = 0.15, round_ratio = 0.2, edge_width = 2`` (with the hard and with the soft edge
profile) against ``edge_lambda = 0, round_ratio = 0``, all through edgesearch's trainer step on the
same model, batches and device, in turns; each ratio is the median of the per-round ratios.
Target: both ratios <= 1.03.

    python benchmarks/edge_cost.py [--tiny] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common
import _step

TARGET = 1.03
EDGE = {"edge_lambda": 0.15, "round_ratio": 0.2, "edge_width": 2}
SOFT = {**EDGE, "edge_profile": "soft"}
PLAIN = {"edge_lambda": 0.0, "round_ratio": 0.0}


def main() -> None:
    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    import torch

    torch.manual_seed(0)
    setup = _step.Setup(**_step.SIZES["tiny" if args.tiny else "full"], device="cpu")
    data = _step.batches(setup)
    plain_model, edge_model, soft_model = _step.models(setup, 3)
    variants = {
        "plain": _step.edgesearch_step_runner(plain_model, data, _step.train_config(setup, **PLAIN)),
        "edge": _step.edgesearch_step_runner(edge_model, data, _step.train_config(setup, **EDGE)),
        "soft": _step.edgesearch_step_runner(soft_model, data, _step.train_config(setup, **SOFT)),
    }
    _common.log(f"edge cost: {setup}")
    samples = _common.alternate(variants, rounds=setup.rounds)
    medians = {name: _common.median(values) for name, values in samples.items()}
    value = _common.paired_ratio(samples, "edge", "plain")
    soft = _common.paired_ratio(samples, "soft", "plain")
    _common.log(
        f"step s: plain {medians['plain']:.4f}, edge {medians['edge']:.4f} (ratio {value:.3f}), "
        f"soft {medians['soft']:.4f} (ratio {soft:.3f})"
    )
    _common.emit(
        "edge_cost",
        args,
        {
            "setup": setup.__dict__,
            "loss": {"edge": EDGE, "soft": SOFT, "plain": PLAIN},
            "seconds_per_step": {"median": medians, "samples": samples},
            "ratio": value,
            "ratio_soft": soft,
            "ratio_definition": "median over rounds of the two variants' step times in that round",
            "ratio_of_medians": _common.ratio(medians["edge"], medians["plain"]),
            "target": f"<= {TARGET}",
            "met": value is not None and value <= TARGET and soft is not None and soft <= TARGET,
        },
    )


if __name__ == "__main__":
    main()
