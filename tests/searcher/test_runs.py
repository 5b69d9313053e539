"""Run folders: one namespace per study, each folder claimed by its trial (searcher/study/run_folders.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgesearch.errors import UserError
from edgesearch.searcher.study.run_folders import claim_run_dir, file_digest, new_run_id, study_namespace, trial_run_dir


def test_each_study_has_its_own_namespace() -> None:
    first, second = new_run_id(), new_run_id()
    assert first != second and len(first) == 8
    assert trial_run_dir(Path("runs"), "lam", first, 3) == Path("runs") / f"lam-{first}" / "trial-00003"
    assert study_namespace("old", None) == "old"  # a study made before run ids


def test_a_new_trial_claims_a_new_folder(tmp_path: Path) -> None:
    run_dir = tmp_path / "lam-aa" / "trial-00000"
    claim_run_dir(run_dir, study="lam", run_id="aa", trial=0, resuming=False)
    assert json.loads((run_dir / "trial.json").read_text()) == {"study": "lam", "run_id": "aa", "trial": 0}


def test_a_new_trial_never_trains_over_another_trials_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "trial-00000"
    claim_run_dir(run_dir, study="lam", run_id="aa", trial=0, resuming=False)
    (run_dir / "best.pt").write_bytes(b"weights of the first study")
    with pytest.raises(UserError, match=r"holds files of study lam \(run id aa\) trial 0"):
        claim_run_dir(run_dir, study="lam", run_id="bb", trial=0, resuming=False)
    assert (run_dir / "best.pt").read_bytes() == b"weights of the first study"


@pytest.mark.parametrize(("study", "run_id"), [("lam", "bb"), ("other", "aa")])
def test_a_retry_resumes_only_from_its_own_studys_folder(tmp_path: Path, study: str, run_id: str) -> None:
    run_dir = tmp_path / "trial-00000"
    claim_run_dir(run_dir, study="lam", run_id="aa", trial=0, resuming=False)
    claim_run_dir(run_dir, study="lam", run_id="aa", trial=5, resuming=True)  # its own retry
    with pytest.raises(UserError, match="will not resume from it"):
        claim_run_dir(run_dir, study=study, run_id=run_id, trial=5, resuming=True)


def test_a_folder_without_a_claim_is_never_resumed(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"a checkpoint from anywhere")
    with pytest.raises(UserError, match="no edgesearch trial"):
        claim_run_dir(tmp_path, study="lam", run_id="aa", trial=1, resuming=True)


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert file_digest(tmp_path / "f") == hashlib.sha256(data).hexdigest()
