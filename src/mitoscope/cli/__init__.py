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
    """Entry point of the ``mitoscope`` console script; returns the exit code.

    Usage errors are Typer's (message + usage, exit 2); a :class:`MitoscopeError` becomes one
    line ``mitoscope: error: ...`` on stderr and exit 2 (with the traceback under ``--verbose``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    try:
        app(args=args, prog_name="mitoscope", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except MitoscopeError as exc:
        if verbose:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mitoscope: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mitoscope: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
