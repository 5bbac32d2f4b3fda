"""The CLI shell: help, usage errors and the one-line error contract."""

from __future__ import annotations

import pytest

from mitoscope.cli import main


def _commands() -> list[str]:
    """The top-level commands the COMMAND_MODULES registered (``train-detector``, ``curate``,
    ...; a module may add a subcommand to a group instead)."""
    import typer

    from mitoscope.cli import app

    return sorted(typer.main.get_command(app).commands)


def test_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert {"detect", "train", "train-detector", "curate"} <= set(_commands())
    for name in _commands():
        assert name in out


@pytest.mark.parametrize("name", _commands())
def test_each_command_has_help(name: str, capsys) -> None:
    assert main([name, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys) -> None:
    assert main(["info"]) == 2
    assert main(["info", "--no-such-option", "x"]) == 2
    assert main(["no-such-command"]) == 2


def test_user_error_is_one_line(tmp_path, capsys) -> None:
    assert main(["info", str(tmp_path / "missing.svs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mitoscope: error: {tmp_path / 'missing.svs'}: no such file"]
