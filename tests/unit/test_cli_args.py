"""cli._join_dash_values: an option value starting with "-" is kept, the "--" separator is not
taken as one."""

from __future__ import annotations

import pytest

from nightwatch.app.cli import _join_dash_values, _parser

SUBMIT = ["task", "submit", "--name", "n", "--namespace", "default", "--image", "busybox"]


def test_a_dash_value_is_joined_to_its_option() -> None:
    args = _parser().parse_args(_join_dash_values([*SUBMIT, "--command", "sh", "--arg", "-c", "--arg", "echo"]))
    assert (args.command, args.arg) == (["sh"], ["-c", "echo"])


def test_the_separator_after_a_value_option_is_not_its_value(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SUBMIT, "--arg", "--", "sleep", "60"]
    assert _join_dash_values(argv) == argv  # not "--arg=--", which would swallow the separator
    with pytest.raises(SystemExit):
        _parser().parse_args(_join_dash_values(argv))
    assert "--arg: expected one argument" in capsys.readouterr().err
    args = _parser().parse_args(_join_dash_values([*SUBMIT, "--arg", "-v", "--", "sleep", "60"]))
    assert args.arg == ["-v"] and args.words == ["sleep", "60"]
