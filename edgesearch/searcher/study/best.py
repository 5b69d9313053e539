"""The best of a study: its best trial (for two objectives, the point of the Pareto front that ``--pick``
names), the trials on its front, and the best model's files, checked against the digest its trial recorded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import TrialState

from edgesearch.errors import UserError
from edgesearch.searcher.study.run_folders import CHECKPOINT_REMOVED_ATTR, file_digest

if TYPE_CHECKING:
    from edgesearch.searcher.study.config import StudyConfig
    from edgesearch.trainer.config import TrainConfig

__all__ = ["BestModel", "best_model", "best_trial", "describe_values", "front_trials"]


@dataclass(frozen=True)
class BestModel:
    """The best trial's model: its resolved config, its ``best.pt``, and a line saying which it is."""

    config: TrainConfig
    checkpoint: Path
    description: str


def best_trial(study: optuna.Study, config: StudyConfig, *, pick: str | None = None) -> optuna.trial.FrozenTrial:
    """The study's best COMPLETE trial, or for a study of two objectives the point ``pick`` of its
    Pareto front (:mod:`~edgesearch.searcher.study.front`; trials in number order, so a tie goes to the
    earlier trial).

    UserError: no completed trial yet; ``pick`` missing for two objectives, or given for one.
    """
    from edgesearch.searcher.study.front import PICKS, pareto_front, pick_point

    name = study.study_name
    if not config.multi_objective:
        if pick is not None:
            raise UserError(
                f"--pick is for studies of two objectives; study {name!r} maximises {config.metric} alone, "
                "so it has one best trial: leave --pick out"
            )
        try:
            return study.best_trial
        except ValueError:
            raise UserError(f"study {name!r} has no completed trial yet") from None
    complete = _complete_trials(study)
    points = [tuple(t.values) for t in complete]
    if pick is None:
        size = f"a Pareto front of {len(pareto_front(points))} trial(s)" if complete else "no completed trial yet"
        raise UserError(
            f"study {name!r} maximises {' and '.join(config.objectives)} together ({size}), not one metric: "
            f"choose the point of its front with --pick {'|'.join(PICKS)}"
        )
    if not complete:
        raise UserError(f"study {name!r} has no completed trial yet")
    try:
        index = pick_point(points, config.objectives, pick)
    except ValueError as exc:
        raise UserError(f"--pick: {exc}") from None
    return complete[index]


def _complete_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials that have values, in number order."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted((t for t in trials if t.values is not None), key=lambda t: t.number)


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The COMPLETE trials on the Pareto front of their values (:mod:`~edgesearch.searcher.study.front`), by number."""
    from edgesearch.searcher.study.front import pareto_front

    complete = _complete_trials(study)
    return [complete[i] for i in sorted(pareto_front([t.values for t in complete]))]


def describe_values(trial: optuna.trial.FrozenTrial, config: StudyConfig) -> str:
    """``value 0.8123``, or ``val_iou 0.8123, val_boundary_iou 0.5012`` for a study of two objectives."""
    values = trial.values or []
    if not config.multi_objective:
        return f"value {values[0]:.4f}" if values else "no value"
    return ", ".join(f"{metric} {value:.4f}" for metric, value in zip(config.objectives, values, strict=False))


def best_model(study: optuna.Study, config: StudyConfig, *, pick: str | None = None) -> BestModel:
    """The config and checkpoint of the trial ``study best`` names (one metric: the default rule's choice,
    :func:`~edgesearch.searcher.study.choice.study_choice`; two: :func:`best_trial` of ``pick``), ready to
    predict with (pretrained weights never loaded).

    The checkpoint holds every weight, and the ``encoder_weights`` a run started from (a download,
    or a file on the training machine) may be out of reach here
    (:func:`~edgesearch.trainer.config.prediction_overrides`).
    """
    from edgesearch.searcher.study.choice import study_choice
    from edgesearch.trainer.config import prediction_overrides, validate_train_config

    if config.multi_objective or pick is not None:
        best = best_trial(study, config, pick=pick)  # refuses --pick for one metric and its absence for two
    else:  # the trial `study best` names: its default rule's choice
        best = study.trials[study_choice(study, config).chosen.number]
    where = f"study {study.study_name} trial {best.number}"
    raw, checkpoint = best.user_attrs.get("config"), best.user_attrs.get("best_checkpoint")
    if raw is None or checkpoint is None:
        raise UserError(f"{where}: no stored config or best_checkpoint (was it run by edgesearch worker?)")
    removed = best.user_attrs.get(CHECKPOINT_REMOVED_ATTR)
    if removed is not None:
        raise UserError(
            f"{where}: its best.pt was removed ({removed}); its configuration is its `config` in "
            f"`edgesearch study export {study.study_name} --format json`: train it again to predict with it"
        )
    train_config = validate_train_config(raw, source=where, overrides=prediction_overrides)
    path = Path(checkpoint)
    recorded = best.user_attrs.get("best_checkpoint_sha256")
    if recorded is not None and path.is_file() and file_digest(path) != recorded:
        raise UserError(
            f"{where}: {path} is not the checkpoint this trial recorded (its SHA-256 differs: the file was "
            "replaced, e.g. by another study of the same name); refusing to predict with it"
        )
    chosen = f"{pick} of the Pareto front, " if pick is not None else ""
    return BestModel(train_config, path, f"{where} ({chosen}{describe_values(best, config)}), {checkpoint}")
