"""``mitoscope review`` (the review app) and ``mitoscope select`` (what to review next)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("review")(review)
    app.command("select")(select)


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


def select(
    runs: list[Path] = typer.Argument(
        ..., help="Run directories (or .sqlite files) to choose from."
    ),
    budget: int = typer.Option(..., "--budget", help="How many detections to choose."),
    out: Path = typer.Option(
        None, "--out", help="One queue file for all (default: review_queue.json in each run)."
    ),
    min_dist_px: float = typer.Option(
        50.0, "--min-dist-px", help="Skip detections this close to one already chosen."
    ),
    threshold: float = typer.Option(
        None, "--threshold", help="Threshold the uncertainty is measured from (default: the run's)."
    ),
) -> None:
    """Choose the detections to review next: nearest the threshold, spread across slides."""
    from .select import select_for_review, write_queues

    items = select_for_review(runs, budget=budget, min_dist_px=min_dist_px, threshold=threshold)
    for path in write_queues(items, out):
        typer.echo(f"{path}")
    n_slides = len({(i["db"], i["slide"]) for i in items})
    typer.echo(f"{len(items)} detections chosen on {n_slides} slide(s)")
