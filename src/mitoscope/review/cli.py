"""``mitoscope review``: the review app on a run's detections (typer command)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("review")(review)


def review(
    run: Path = typer.Argument(
        ..., help="Run directory (with mitoscope.sqlite) or a .sqlite file."
    ),
    slides: Path = typer.Option(
        ..., "--slides", help="Folder holding the slides (only these are served)."
    ),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; not loopback needs --token."
    ),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    token: str = typer.Option(None, "--token", help="Secret every request must carry (?token=)."),
    reviewer: str = typer.Option("", "--reviewer", help="Your name, stored with every answer."),
    threshold: float = typer.Option(
        None, "--threshold", help="Threshold of the uncertainty queue (default: the run's)."
    ),
    queue: Path = typer.Option(
        None, "--queue", help="review_queue.json from mitoscope select (default: the run's)."
    ),
) -> None:
    """Review detections in the browser: mitotic figure / not / equivocal, one key each."""
    from .app import serve

    serve(run, slides, host=host, port=port, token=token, reviewer=reviewer,
          threshold=threshold, queue_file=queue)  # fmt: skip
