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
    "train_atypical",
    "train_detector",
    "classify",
    "review",
    "curate",
    "curate_transfer",
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


def _usage_line(exc: Exception) -> str:
    """A Click usage error as one line: ``--mpp: 'abc' is not a valid float`` (no usage box)."""
    msg = " ".join(str(exc.format_message()).split())  # type: ignore[attr-defined]
    ctx, parts = getattr(exc, "ctx", None), []
    while ctx is not None and ctx.parent is not None:  # "curate masks", not "masks"
        parts.append(ctx.info_name or ctx.command.name)
        ctx = ctx.parent
    hint = f"; see: mitoscope {' '.join(reversed(parts))} --help" if parts else ""
    return f"{msg.rstrip('.')}{hint}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mitoscope`` console script; returns the exit code.

    Every failure a user can cause is one line ``mitoscope: error: ...`` on stderr and exit 2:
    option parsing errors (Click's usage errors, without the usage box) and any
    :class:`MitoscopeError` (with the traceback under ``--verbose``). Ctrl-C exits 130.
    """
    try:  # Typer >= 0.26 vendors Click (and keeps Abort in typer.exceptions)
        from typer._click import exceptions as click_exc
        from typer.exceptions import Abort
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exc
        from click.exceptions import Abort

    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    try:
        code = app(args=args, prog_name="mitoscope", standalone_mode=False)
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except click_exc.NoArgsIsHelpError as exc:
        exc.show()
        return 2
    except click_exc.UsageError as exc:
        print(f"mitoscope: error: {_usage_line(exc)}", file=sys.stderr)
        return 2
    except click_exc.ClickException as exc:  # e.g. an unreadable file argument
        print(f"mitoscope: error: {_usage_line(exc)}", file=sys.stderr)
        return 2
    except MitoscopeError as exc:
        if verbose:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mitoscope: error: {msg}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Abort):
        print("mitoscope: interrupted", file=sys.stderr)
        return 130
    if code == 130:  # Typer turns Ctrl-C into exit code 130 without a word
        print("mitoscope: interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0


def run() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
