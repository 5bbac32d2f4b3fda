"""mitoscope review in a real headless Chromium (Playwright): a uvicorn server on 127.0.0.1
with a tiny run, the answer keys, a reload keeping the answers, the database rows."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from review_helpers import make_run

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
SHOT = (
    Path(os.environ.get("MITOSCOPE_REVIEW_SCREENSHOT", ""))
    if os.environ.get("MITOSCOPE_REVIEW_SCREENSHOT")
    else None
)


def _browser_or_skip():
    pytest.importorskip("fastapi", reason="mitoscope review needs: pip install 'mitoscope[review]'")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if exe is None:
        pytest.skip("no Chromium: apt-get install -y chromium")
    return sync_api, exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows(db: Path) -> list[tuple[str, str, int]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT p.name, c.name, l.annoId FROM Annotations_label l JOIN Persons p "
            "ON p.uid = l.person JOIN Classes c ON c.uid = l.class "
            "WHERE p.name != 'mitoscope' ORDER BY l.uid"
        ).fetchall()
    finally:
        con.close()


def test_review_page_in_chromium(tmp_path: Path) -> None:
    sync_api, exe = _browser_or_skip()
    run, slides = make_run(tmp_path, size=600)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mitoscope.review", str(run), "--slides", str(slides),
         "--port", str(port), "--reviewer", "alice"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(base + "api/queues", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(base + "#uncertainty")
                page.wait_for_selector("body[data-ready='1']", timeout=15000)
                page.wait_for_function("document.getElementById('item-id').textContent !== ''")
                assert page.text_content("#item-p").startswith("0.520")  # nearest 0.5 first
                first = int(page.text_content("#item-id").lstrip("#"))
                # the slide's tiles and the outline are drawn
                page.wait_for_selector("#viewer svg.outline polygon", state="attached")
                page.wait_for_function(
                    "document.querySelector('#viewer canvas') !== null", timeout=15000
                )
                page.wait_for_timeout(800)  # let the tiles fade in
                if SHOT is not None:
                    page.screenshot(path=str(SHOT))
                page.keyboard.press("a")  # atypical mitotic figure
                page.wait_for_function(
                    f"document.getElementById('item-id').textContent !== '#{first}'"
                )
                assert _rows(run / "mitoscope.sqlite") == [
                    ("alice", "Atypical mitotic figure", first)
                ]
                second = int(page.text_content("#item-id").lstrip("#"))
                page.keyboard.press("e")  # equivocal -> the second reviewer's queue
                page.wait_for_function(
                    f"document.getElementById('item-id').textContent !== '#{second}'"
                )
                # reload: the answers are kept, progress shows them
                page.reload()
                page.wait_for_selector("body[data-ready='1']")
                page.wait_for_function("document.getElementById('item-id').textContent !== ''")
                assert page.text_content("#item-id") not in (f"#{first}", f"#{second}")
                progress = page.text_content("#progress")
                assert "uncertainty2 / 6" in progress
                # a second reviewer answers the equivocal one
                page.fill("#reviewer", "bob")
                page.press("#reviewer", "Enter")  # leaves the field: keys answer again
                page.select_option("#queue", "second")
                page.wait_for_function(
                    f"document.getElementById('item-id').textContent === '#{second}'"
                )
                page.keyboard.press("n")
                page.wait_for_function(
                    "document.getElementById('status').textContent.includes('is done')"
                )
                assert not errors, errors
            finally:
                browser.close()
    finally:
        server.kill()
        server.wait(10)
    assert _rows(run / "mitoscope.sqlite") == [
        ("alice", "Atypical mitotic figure", first),
        ("alice", "Equivocal", second),
        ("bob", "Non-mitotic figure", second),
    ]
