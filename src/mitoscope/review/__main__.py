"""``python -m mitoscope.review RUN --slides DIR``: the review app without the main CLI."""

from __future__ import annotations

import sys

import typer

from ..errors import MitoscopeError
from .cli import review


def main() -> int:
    try:
        typer.run(review)
    except MitoscopeError as exc:
        print(f"mitoscope: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
