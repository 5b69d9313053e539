"""Local worker processes: which GPU each child gets, and how the progress view names it."""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest

from edgesearch.searcher.run.processes import LocalWorkers, gpu_slots, slot_label


def test_per_gpu_repeats_each_gpu_in_turn() -> None:
    assert gpu_slots(["0", "1"], 1) == ["0", "1"]
    assert gpu_slots(["0", "1"], 2) == ["0", "0", "1", "1"]
    assert gpu_slots(["3"], 3) == ["3", "3", "3"]
    assert [slot_label(i, gpu) for i, gpu in enumerate([None, "1"])] == ["w0", "w1 gpu1"]


@pytest.mark.slow
def test_each_child_is_given_its_gpu_and_one_without_cuda_refuses_before_taking_a_trial(sqlite_url: str) -> None:
    """On a machine without CUDA every child says which GPU it was given, then exits 2 having run nothing."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the refusal of children on a machine without CUDA")
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.searcher.study.studies import create_study, load_study
    from tests.helpers import TINY_TRAINER

    raw = {
        "name": "gpus",
        "n_trials": 4,
        "trainer": TINY_TRAINER,
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    create_study(StudyConfig.from_dict(raw, source="test"), sqlite_url)
    lines: list[tuple[int, str]] = []
    slots = gpu_slots(["0", "1"], 2)
    workers = LocalWorkers("gpus", sqlite_url, slots=slots, args=[], on_line=lambda i, line: lines.append((i, line)))
    workers.start()
    deadline = time.monotonic() + 120
    while workers.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers.finish() == 2
    given = {}
    for index, line in lines:
        match = re.search(r"given GPU (\d+)", line)
        if match:
            given[index] = match.group(1)
    assert given == {0: "0", 1: "0", 2: "1", 3: "1"}, lines
    assert Counter(given.values()) == {"0": 2, "1": 2}
    assert load_study("gpus", sqlite_url)[0].get_trials() == []  # no child took a trial
