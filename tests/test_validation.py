"""The one error formatter (edgesearch.validation) on models of its own, apart from the real configs."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import Field, ValidationError

from edgesearch.errors import ConfigError
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.trainer.config import validate_train_config
from edgesearch.validation import MAX_SHOWN_CHARS, FrozenModel, format_validation_error, shorten


class _Inner(FrozenModel):
    rate: float = Field(0.5, ge=0.0, le=1.0)


class _Cat(FrozenModel):
    kind: Literal["cat"] = "cat"
    lives: int = 9


class _Dog(FrozenModel):
    kind: Literal["dog"] = "dog"
    tricks: int = 0


class _Outer(FrozenModel):
    name: str
    inner: _Inner = _Inner()
    pet: Annotated[_Cat | _Dog, Field(discriminator="kind")] = _Cat()
    tags: list[int] = Field(default_factory=list)


def _lines(raw: object, **kwargs: object) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        _Outer.model_validate(raw)
    return format_validation_error(caught.value, source="f.yaml", model=_Outer, **kwargs)  # type: ignore[arg-type]


def test_shorten_keeps_short_values_and_cuts_long_ones() -> None:
    assert shorten("abc") == "'abc'"
    long = shorten("x" * 10_000)
    assert len(long) < MAX_SHOWN_CHARS + 30
    assert long.endswith("(10002 characters)")


def test_each_problem_is_one_line_naming_file_field_and_bounds() -> None:
    lines = _lines({"name": "a", "inner": {"rate": 2.0}, "tags": [1, "x"]})
    assert lines[0] == "f.yaml: inner.rate: 2.0 is out of range; allowed: 0.0 <= x <= 1.0"
    assert lines[1].startswith("f.yaml: tags[1]: ")


def test_an_unknown_key_lists_the_sections_keys_and_the_union_member_that_has_it() -> None:
    (line,) = _lines({"name": "a", "pet": {"kind": "cat", "tricks": 2}})
    assert line.startswith("f.yaml: pet.tricks: unknown key (check the spelling); allowed: kind, lives")
    assert line.endswith("(tricks belongs to pet kind dog)")


def test_an_unknown_union_tag_names_the_allowed_tags() -> None:
    (line,) = _lines({"name": "a", "pet": {"kind": "cow"}})
    assert line == "f.yaml: pet.kind: unknown pet 'cow'; allowed: cat, dog"


def test_a_missing_field_gets_its_hint_and_a_prefix_is_kept() -> None:
    (line,) = _lines({}, hints={"name": "letters"}, prefix="study.")
    assert line == "f.yaml: study.name: required but missing; allowed: letters"


def test_a_huge_value_in_a_file_is_cut_in_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_train_config({"model": {"arch": "u" * 5000}}, source="big.yaml")
    message = str(caught.value)
    assert message.startswith("big.yaml: model.arch: unknown arch 'uuuu")
    assert "(5002 characters)" in message
    assert len(message) < 600


def test_a_huge_study_name_is_cut_in_the_message() -> None:
    raw = {"name": "/" * 3000, "n_trials": 1, "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}}}
    with pytest.raises(ConfigError) as caught:
        StudyConfig.from_dict(raw, source="s.yaml")
    assert "(3002 characters)" in str(caught.value)
    assert len(str(caught.value)) < 400
