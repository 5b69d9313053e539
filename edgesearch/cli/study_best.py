"""``edgesearch study best`` and ``study confirm``: a study's choice (under a rule of choosing, with how sure it
is) and the re-trainings that measure the seed noise."""

from __future__ import annotations

import json
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgesearch.cli.console import out, print_commands, user_errors
from edgesearch.cli.options import PickOption, StorageOption, format_value, quiet_optuna
from edgesearch.searcher.study.choosing import DEFAULT_RULE

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = ["best_command", "confirm_command"]


class Rule(str, Enum):
    """The rules of choosing (:data:`edgesearch.searcher.study.choosing.RULES`)."""

    highest = "highest"
    confirmed = "confirmed"
    shrinkage = "shrinkage"


def _best_record(name: str, url: str, pick: str | None, rule: str | None) -> dict[str, Any]:
    """The best trial: chosen by ``rule`` (the default when None) in a study of one metric, else the ``pick`` point."""
    from edgesearch.searcher.study.best import best_trial
    from edgesearch.searcher.study.choice import choice_record, study_choice
    from edgesearch.searcher.study.studies import load_study

    study, config = load_study(name, url, read_only=True)
    if pick is not None or (config.multi_objective and rule is None):
        best = best_trial(study, config, pick=pick)  # refuses --pick for one metric and its absence for two
        choice = None
    else:
        choice = choice_record(study_choice(study, config, rule))
        best = study.trials[choice["trial"]]
    record: dict[str, Any] = {"study": name, "trial": best.number}
    if config.multi_objective:
        record["pick"] = pick
        record["values"] = dict(zip(config.objectives, best.values or [], strict=False))
    else:
        record["value"] = best.value
        record["choice"] = choice
    return record | {"params": best.params, **_checkpoint_fields(best)}


def _checkpoint_fields(trial: FrozenTrial) -> dict[str, Any]:
    """The trial's checkpoint and run folder; a checkpoint that ``keep_checkpoints`` removed is null, and
    ``checkpoint_removed`` says why."""
    from edgesearch.searcher.study.disk import removed_reason

    removed = removed_reason(trial)
    return {
        "checkpoint": trial.user_attrs.get("best_checkpoint") if removed is None else None,
        "checkpoint_removed": removed,
        "run_dir": trial.user_attrs.get("run_dir"),
    }


def _checkpoint_line(record: dict[str, Any]) -> str:
    removed = record["checkpoint_removed"]
    return f"removed ({removed})" if removed is not None else str(record["checkpoint"])


RuleOption = Annotated[
    Rule | None,
    typer.Option(
        "--rule",
        help="How to choose among a metric's trials: highest (the highest value, one seed's run), confirmed (the "
        "mean of the re-trainings `study confirm` queued), shrinkage (each value pulled towards its neighbours' "
        f"by the seed noise those re-trainings measured); default {DEFAULT_RULE}.",
    ),
]


def best_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOption = None,
    pick: PickOption = None,
    rule: RuleOption = None,
    confirmed: Annotated[bool, typer.Option("--confirmed", help="The same as --rule confirmed.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The best trial (of a study of two objectives: the --pick point of its front): values, parameters, checkpoint,
    and how sure the choice is."""
    with user_errors():
        from edgesearch.errors import UserError
        from edgesearch.searcher.storage.urls import resolve_storage_url

        url = resolve_storage_url(storage)
        if confirmed and pick is not None:
            raise UserError("--confirmed and --pick do not go together: confirmations rank one metric")
        if rule is not None and pick is not None:
            raise UserError("--rule and --pick do not go together: a rule chooses among the trials of one metric")
        if confirmed and rule is not None and rule != Rule.confirmed:
            raise UserError(f"--confirmed is --rule confirmed: it does not go with --rule {rule.value}")
        if confirmed or rule == Rule.confirmed:
            record = _confirmed_record(name, url)
        else:
            record = _best_record(name, url, pick.value if pick is not None else None, rule.value if rule else None)
    if as_json:
        out.print_json(json.dumps(record))
        return
    if "confirmed" in record:
        c = record["confirmed"]
        spread = f" ± {format_value(c['sd'])}" if c["sd"] is not None else ""
        holds = {True: "holds", False: "does not hold", None: "not known yet"}[record["ranking_holds"]]
        out.print(
            f"best confirmed: trial {record['trial']}'s configuration, mean {format_value(c['mean'])}{spread}, "
            f"min {format_value(c['min'])} over {c['n']} of {c['seeds']} fresh seed(s) "
            f"(search: {format_value(record['value'])}); the search's ranking {holds}",
            markup=False,
        )
        out.print(record["choice"]["says"], markup=False)
        for key, value in record["params"].items():
            out.print(f"  {key} = {format_value(value)}")
        out.print(f"checkpoint (the search's run): {_checkpoint_line(record)}", markup=False)
        return
    if "values" in record:
        values = ", ".join(f"{metric} {value:.4f}" for metric, value in record["values"].items())
        out.print(f"best trial {record['trial']} ({record['pick']} of the Pareto front): {values}")
    else:
        out.print(f"best trial {record['trial']}: value {record['value']:.4f}")
        out.print(record["choice"]["says"], markup=False)
    for key, value in record["params"].items():
        out.print(f"  {key} = {format_value(value)}")
    out.print(f"checkpoint: {_checkpoint_line(record)}", markup=False)


def _confirmed_record(name: str, url: str) -> dict[str, Any]:
    from edgesearch.searcher.study.choice import choice_record, study_choice
    from edgesearch.searcher.study.confirm import best_confirmed, confirmed, ranking_holds
    from edgesearch.searcher.study.studies import load_study

    study, config = load_study(name, url, read_only=True)
    best = best_confirmed(study)
    source = study.trials[best.trial]
    rows = confirmed(study)
    return {
        "study": name,
        "trial": best.trial,
        "confirmed": {
            "mean": best.mean,
            "sd": best.sd,
            "min": best.min,
            "n": best.n,
            "seeds": best.seeds,
            "values": list(best.values),
        },
        "value": best.original,
        "ranking_holds": ranking_holds(rows),
        "choice": choice_record(study_choice(study, config, "confirmed", rows=rows)),
        "params": source.params,
        **_checkpoint_fields(source),
    }


def confirm_command(
    name: Annotated[str, typer.Argument(help="Study name.")],
    top: Annotated[int, typer.Option("--top", help="How many of the best configurations to re-train (1-50).")] = 3,
    seeds: Annotated[int, typer.Option("--seeds", help="Fresh seeds per configuration (1-50).")] = 3,
    storage: StorageOption = None,
) -> None:
    """Queue re-trainings of the TOP best configurations with SEEDS fresh seeds each; workers run them."""
    with user_errors():
        from edgesearch.searcher.storage.urls import resolve_storage_url
        from edgesearch.searcher.study.confirm import request
        from edgesearch.searcher.study.studies import load_study

        url = resolve_storage_url(storage)
        quiet_optuna()
        study, config = load_study(name, url)
        plan = request(study, config, top=top, seeds=seeds)
    trials = ", ".join(str(number) for number in plan.trials)
    already = f" ({plan.already} already queued or done)" if plan.already else ""
    out.print(
        f"queued {plan.queued} re-training(s) of trial(s) {trials} with {plan.seeds} fresh seed(s) each{already}",
        markup=False,
    )
    print_commands(
        url,
        [
            f"workers take them before new trials: edgesearch worker {name}{{storage}}",
            f"then: edgesearch study best {name} --confirmed{{storage}}",
        ],
    )
