"""``mitoscope curate ...``: the data-curation commands (:mod:`mitoscope.curate`).

``curate_app`` is the Typer group; ``curate masks`` and ``curate crowd`` are defined here, the
registration-based commands (``rescan``, ``phh3``) in :mod:`.curate_transfer`, which adds them to
``curate_app``.
"""

from __future__ import annotations

import typer

curate_app = typer.Typer(
    name="curate",
    help="Curate training data: masks from point labels, crowd consensus, label transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(curate_app, name="curate")
