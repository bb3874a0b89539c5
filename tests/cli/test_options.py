"""The error boundary and option parsing: one-line errors with meaningful exit codes."""

from __future__ import annotations

import pytest

from tests.cli.runner import one_line_error, run


@pytest.mark.parametrize("args, code, words", [
    (["eval", "-c", "no/such/run"], 2, "checkpoint not found"),
    (["sample", "-c", "no/such/run"], 2, "checkpoint not found"),
    (["train", "--backbone", "resnet", "--steps", "1"], 2, "unknown backbone 'resnet'"),
    (["probe", "--backbone", "resnet"], 2, "unknown backbone 'resnet'"),
    (["train", "--dataset", "imagenet1k", "--steps", "1"], 2, "unknown dataset 'imagenet1k'"),
    (["train", "--recipe", "no_such_recipe"], 2, "recipe not found"),
    (["backbones", "--pattern", "zzz*"], 2, "no backbone matches"),
])
def test_user_mistakes_are_one_line_with_a_meaningful_code(args, code, words):
    assert words in one_line_error(run(*args, code=code))


def test_bad_option_is_a_usage_error():
    result = run("train", "--steps", "many", code=2)
    assert "Invalid value for '--steps'" in result.stderr and "Traceback" not in result.stderr
    run("probe", "--no-such-option", code=2)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_finite_float_refuses_what_float_range_lets_through(text):
    import click

    from hybridflow.cli.options import FiniteFloat

    assert click.FloatRange(min=0).convert(text.lstrip("-"), None, None) != 0  # FloatRange takes nan and inf
    with pytest.raises(click.BadParameter, match="not a finite number"):
        FiniteFloat(min=None).convert(text, None, None)
    assert FiniteFloat(min=0, max=1).convert("0.25", None, None) == 0.25


def test_parse_options_with_a_backbone_names_the_key_and_type():
    import click

    from hybridflow.cli.options import parse_options

    assert parse_options(("hidden=16", "patch_size=[2,2]"), "mixerflow_tiny") == {"hidden": 16, "patch_size": (2, 2)}
    assert parse_options(("hidden=abc",)) == {"hidden": "abc"}  # without a backbone: unchecked
    with pytest.raises(click.ClickException, match="-o: backbone option hidden='abc' of mixerflow_tiny"):
        parse_options(("hidden=abc",), "mixerflow_tiny")
