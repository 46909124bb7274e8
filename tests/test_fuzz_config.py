"""Property: any override either composes to a valid spec or fails with one clear line."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ft_cli.config import compose, schema
from ft_cli.errors import FtError
from ft_cli.tasks.metrics import monitored


def _keys(cls: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            out += _keys(hints[item.name], f"{prefix}{item.name}.")
        else:
            out.append(f"{prefix}{item.name}")
    return out


VALID_KEYS = _keys(schema.RunSpec)
GROUPS = [*schema.GROUPS, "recipe"]
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
values = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.booleans().map(lambda b: str(b).lower()),
    st.sampled_from(
        ["null", "[]", "[1,2]", "{a: 1}", "abc", "'x y'", "${oops}", "1e-5", "-1", "0"]
    ),
    words,
)
key_override = st.builds(
    lambda k, v: f"{k}={v}",
    st.one_of(st.sampled_from(VALID_KEYS), words.map(lambda w: f"train.{w}"), words),
    values,
)
append_override = st.builds(
    lambda k, v: f"+{k}={v}", st.one_of(st.sampled_from(VALID_KEYS), words), values
)
group_override = st.builds(
    lambda g, o, plus: f"{'+' if plus else ''}{g}={o}",
    st.sampled_from(GROUPS),
    st.one_of(
        st.sampled_from(
            ["demo", "tiny_bert", "csv", "freeze_layers", "sgd", "cosine", "cpu", "regression"]
        ),
        words,
    ),
    st.booleans(),
)
overrides = st.lists(
    st.one_of(key_override, append_override, group_override), min_size=1, max_size=3
)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides)
def test_overrides_compose_or_fail_with_one_line(tokens: list[str]) -> None:
    try:
        spec = compose.to_spec(compose.compose_config(tokens))
        monitored(spec.task, spec.train.early_stopping)
    except FtError as err:
        message = str(err)
        assert message and "\n" not in message, (tokens, message)
        assert "Traceback" not in message
        return
    assert isinstance(spec, schema.RunSpec)


def _bounded(cls: type, prefix: str = "") -> list[tuple[str, schema.Bounds, type]]:
    out = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[item.name]):
            out += _bounded(hints[item.name], f"{prefix}{item.name}.")
        elif item.metadata.get("bounds") is not None:
            out.append((f"{prefix}{item.name}", item.metadata["bounds"], hints[item.name]))
    return out


BOUNDED = [b for b in _bounded(schema.RunSpec) if b[1].length is None]
# Values on and around each range's edges, and far outside it.
edges = st.sampled_from([-1e9, -1, -1e-9, 0, 1e-9, 0.5, 1, 1.5, 2, 3, 1e9])


@pytest.mark.slow
@settings(max_examples=25, deadline=None)
@given(st.sampled_from(BOUNDED), st.one_of(edges, st.floats(-10, 10)))
def test_numbers_outside_their_range_fail_naming_the_key(bounded, number) -> None:
    key, bounds, kind = bounded
    whole = "int" in str(kind) and "float" not in str(kind)
    value = int(number) if whole else float(number)
    # Keep the cross-field rules quiet: only the range is under test.
    extra = (
        ["model.init=scratch"] if key.startswith("model.") and key != "model.name_or_path" else []
    )
    if key.startswith("augment.audio_"):  # audio augmentation: an audio task's
        extra = ["task=audio_classification", "data=demo_audio", "model=tiny_wav2vec2"]
    try:
        compose.to_spec(compose.compose_config([*extra, f"{key}={value!r}"]))
    except FtError as err:
        assert not bounds.holds(value), (key, value, str(err))
        assert str(err).startswith(f"{key}=") and "must be" in str(err), str(err)
        assert "\n" not in str(err)
        return
    assert bounds.holds(value), (key, value)


def test_betas_need_two_values_in_range() -> None:
    import pytest

    for bad in ("[0.9]", "[0.9,1.0]", "[-0.1,0.9]", "[0.9,0.99,0.999]"):
        with pytest.raises(FtError, match=r"^optimizer.betas=.* must be"):
            compose.to_spec(compose.compose_config([f"optimizer.betas={bad}"]))
    spec = compose.to_spec(compose.compose_config(["optimizer.betas=[0.8,0.99]"]))
    assert spec.optimizer.betas == [0.8, 0.99]
