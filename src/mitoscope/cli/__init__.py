"""The ``mitoscope`` command line: thin Typer commands over the library.

Each command lives in its own module in this package and exposes ``register(app)``; modules
import heavy libraries (torch, ray, ...) inside the command body, so ``mitoscope --help`` is fast.
Any :class:`~mitoscope.errors.MitoscopeError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import typer

from ..errors import MitoscopeError

#: command modules, in help order
COMMAND_MODULES = [
    "info",
    "detect",
    "candidates",
    "evaluate",
    "survival",
    "train",
    "classify",
]

app = typer.Typer(
    name="mitoscope",
    help="Find, count and grade mitotic figures in H&E whole-slide images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"verbose": False}


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors."),
) -> None:
    _state["verbose"] = verbose


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mitoscope`` console script."""
    import click

    verbose = "--verbose" in (argv or sys.argv[1:]) or "-v" in (argv or sys.argv[1:])
    try:
        rv = app(args=argv, standalone_mode=False)
        return int(rv or 0) if isinstance(rv, int) else 0
    except MitoscopeError as exc:
        if verbose:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mitoscope: error: {msg}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.Abort:
        print("mitoscope: aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        exc.show()
        return 2
    except KeyboardInterrupt:
        print("mitoscope: interrupted", file=sys.stderr)
        return 130


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
