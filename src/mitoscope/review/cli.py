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
    min_dist_um: float = typer.Option(
        12.5,  # select.MIN_DIST_UM (50 px at 0.25 um/px)
        "--min-dist-um",
        help="Skip detections this close (um) to one already chosen on their slide; needs each "
        "slide's pixel size (mpp in its summary.json); 0 = no distance rule.",
    ),
    threshold: float = typer.Option(
        None, "--threshold", help="Threshold the uncertainty is measured from (default: the run's)."
    ),
    strategy: str = typer.Option(
        "uncertainty",
        "--strategy",
        help="uncertainty (probability nearest the threshold) or disagreement (spread of the "
        "classifier's members and views; needs --slides).",
    ),
    slides: Path = typer.Option(
        None, "--slides", help="Folder holding the slides (disagreement scores them again)."
    ),
    model: Path = typer.Option(
        None, "--model", help="Classifier checkpoint for disagreement (default: the bundled one)."
    ),
    views: int = typer.Option(
        4, "--views", help="Dihedral views per member for disagreement (1-8; 4 = rotations)."
    ),
) -> None:
    """Choose the detections to review next: nearest the threshold (or where the ensemble
    disagrees most), spread across slides."""
    from ..errors import InvalidInputError
    from .select import STRATEGIES, select_for_review, write_queues

    if strategy not in STRATEGIES:
        raise InvalidInputError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    scorer = None
    if strategy == "disagreement":
        if slides is None or not slides.is_dir():
            raise InvalidInputError("--strategy disagreement needs --slides DIR (a folder)")
        from ..classify import load_classifier
        from .disagreement import classifier_disagreement

        if not 1 <= views <= 8:
            raise InvalidInputError("--views must be between 1 and 8")
        clf = load_classifier(model, backend="torch")
        scorer = classifier_disagreement(clf, slides, views=views)
    items = select_for_review(
        runs, budget=budget, min_dist_um=min_dist_um, threshold=threshold, strategy=strategy,
        disagreement=scorer,
    )  # fmt: skip
    for path in write_queues(items, out):
        typer.echo(f"{path}")
    n_slides = len({(i["db"], i["slide"]) for i in items})
    typer.echo(f"{len(items)} detections chosen on {n_slides} slide(s)")
