"""mitoscope review in a real headless Chromium (Playwright): a uvicorn server on 127.0.0.1
with a tiny run, the answer keys, a reload keeping the answers, the database rows; two browser
contexts (two reviewers) answering the same queue at once."""

from __future__ import annotations

import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from review_helpers import make_run
from test_review import as_polygon

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


@contextmanager
def _server(run: Path, slides: Path, *extra: str) -> Iterator[str]:
    """``python -m mitoscope.review`` on a free loopback port; yields its base URL."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mitoscope.review", str(run), "--slides", str(slides),
         "--port", str(port), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90  # a loaded machine starts the server slowly
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(base + "api/queues", timeout=5).read()
                break
            except urllib.error.HTTPError:  # up (401: it wants the token)
                break
            except OSError:
                time.sleep(0.2)
        yield base
    finally:
        server.kill()
        server.wait(10)


def test_review_page_in_chromium(tmp_path: Path) -> None:
    sync_api, exe = _browser_or_skip()
    run, slides = make_run(tmp_path, size=600)
    with _server(run, slides, "--reviewer", "alice") as base:
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
    assert _rows(run / "mitoscope.sqlite") == [
        ("alice", "Atypical mitotic figure", first),
        ("alice", "Equivocal", second),
        ("bob", "Non-mitotic figure", second),
    ]


def test_the_view_is_centred_on_a_polygon_detections_centre(tmp_path: Path) -> None:
    """A detection stored as a polygon (its first vertex 10 px right of its centre): the page
    centres the view and draws the outline on the detection's centre, not on that vertex."""
    from mitoscope.review import ReviewStore

    sync_api, exe = _browser_or_skip()
    run, slides = make_run(tmp_path, size=600)
    spot = ReviewStore(run)
    uid = spot.queues["uncertainty"][0]  # the page's first item
    cx, cy = round(spot.by_uid[uid].x), round(spot.by_uid[uid].y)
    octagon = [(cx + round(10 * math.cos(a)), cy + round(10 * math.sin(a)))
               for a in np.arange(8) * math.pi / 4]  # fmt: skip
    as_polygon(run / "mitoscope.sqlite", uid, octagon)  # centroid (cx, cy); vertex 0 (cx+10, cy)
    with _server(run, slides, "--reviewer", "alice") as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800}, bypass_csp=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "#uncertainty")
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            page.wait_for_function("document.getElementById('item-id').textContent !== ''")
            assert _current(page) == uid
            assert page.text_content("#item-pos") == f"{cx}, {cy} px"
            page.wait_for_selector("#viewer svg.outline polygon", state="attached")
            page.wait_for_timeout(800)  # the overlay follows the viewport on the next frame
            view = page.locator("#viewer").bounding_box()
            box = page.locator("#viewer svg.outline").bounding_box()
            # the outline's svg spans its polygon's box plus 6 image px each side
            outline = np.array(spot.by_uid[uid].outline)
            span = outline.max(axis=0) - outline.min(axis=0) + 12
            scale = box["width"] / span[0]  # screen px per image px
            assert scale > 1  # zoomed in on the detection
            off_x = (box["x"] + box["width"] / 2 - (view["x"] + view["width"] / 2)) / scale
            off_y = (box["y"] + box["height"] / 2 - (view["y"] + view["height"] / 2)) / scale
            # centred on the centre (the outline's box is centred on it within 0.2 px); the
            # first vertex would put the outline 10 image px left of the view's centre
            assert abs(off_x) < 1.5 and abs(off_y) < 1.5, (off_x, off_y)
            assert not errors, errors
        finally:
            browser.close()


def _open_as(browser, base: str, name: str, queue: str):
    """A page in its own browser context (own storage, like another computer) for ``name``."""
    ctx = browser.new_context(viewport={"width": 1000, "height": 700}, bypass_csp=True)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "#" + queue)
    page.fill("#reviewer", name)
    page.press("#reviewer", "Enter")  # leaves the field (change -> first item); keys answer
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    page.wait_for_function("document.getElementById('item-id').textContent !== ''")
    return page, errors


def _current(page) -> int | None:
    text = page.text_content("#item-id")
    return int(text.lstrip("#")) if text else None


_MOVED = (
    "([old]) => document.getElementById('item-id').textContent !== '#' + old"
    " || document.getElementById('status').textContent.includes('is done')"
)


def test_two_reviewers_at_once_in_two_browser_contexts(tmp_path: Path) -> None:
    """Alice and Bob on the same queue at the same time: each item is answered exactly once
    (none lost, none twice), both answers of every press are in the database, and Bob's
    equivocal goes to Alice's second-review queue, never back to Bob's."""
    sync_api, exe = _browser_or_skip()
    probs = (0.51, 0.49, 0.55, 0.45, 0.6, 0.4, 0.7, 0.35, 0.8, 0.9)  # all stored (>= 0.3)
    run, slides = make_run(tmp_path, probs=probs, size=600)
    db = run / "mitoscope.sqlite"
    keys = {"alice": "m", "bob": "n"}
    answered: dict[str, list[int]] = {"alice": [], "bob": []}
    with _server(run, slides) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        try:
            pages = {who: _open_as(browser, base, who, "uncertainty") for who in keys}
            a, b = (_current(pages[w][0]) for w in keys)
            assert a is not None and b is not None and a != b  # each holds its own item
            first_of_bob = True
            while True:
                pressed = {}
                for who, (page, _) in pages.items():  # both press before either is waited for
                    item = _current(page)
                    if item is None:
                        continue
                    key = "e" if who == "bob" and first_of_bob else keys[who]
                    first_of_bob = first_of_bob and who != "bob"
                    page.keyboard.press(key)
                    pressed[who] = item
                if not pressed:
                    break
                for who, item in pressed.items():
                    pages[who][0].wait_for_function(_MOVED, arg=[item], timeout=15000)
                    answered[who].append(item)
            # every item of the queue answered once, by one of them
            done = answered["alice"] + answered["bob"]
            assert sorted(done) == sorted(set(done)) and len(done) == len(probs)
            rows = _rows(db)
            assert sorted(r[2] for r in rows) == sorted(done)
            assert {r[2] for r in rows if r[0] == "alice"} == set(answered["alice"])
            assert answered["alice"] and answered["bob"]
            for page, _ in pages.values():  # a reload still shows the whole queue done
                page.reload()
                page.wait_for_selector("body[data-ready='1']")
                page.wait_for_function(
                    "document.getElementById('status').textContent.includes('is done')"
                )
                assert f"uncertainty{len(probs)} / {len(probs)}" in page.text_content("#progress")
            # second review: Bob's equivocal is Alice's to answer, never Bob's
            equivocal = answered["bob"][0]
            for page, _ in pages.values():
                page.select_option("#queue", "second")
            bob_page, alice_page = pages["bob"][0], pages["alice"][0]
            bob_page.wait_for_function(
                "document.getElementById('status').textContent.includes(\"'second' is done\")"
            )
            alice_page.wait_for_function(
                f"document.getElementById('item-id').textContent === '#{equivocal}'"
            )
            assert "bob: equivocal" in alice_page.text_content("#item-answers")
            alice_page.keyboard.press("a")
            alice_page.wait_for_function(
                "document.getElementById('status').textContent.includes(\"'second' is done\")"
            )
            assert "second1 / 1" in alice_page.text_content("#progress")
            assert not pages["alice"][1] and not pages["bob"][1], pages
        finally:
            browser.close()
    rows = _rows(db)
    assert len(rows) == len(probs) + 1  # one answer per item, plus the second review
    assert rows[-1] == ("alice", "Atypical mitotic figure", equivocal)
    assert ("bob", "Equivocal", equivocal) in rows
    assert sum(r[2] == equivocal for r in rows) == 2


def test_token_xss_and_traversal_attempts_in_chromium(tmp_path: Path) -> None:
    """In the browser, with the page's own CSP: no token -> 401; the ?token= link once, then
    the cookie; script in a slide name and a reviewer name is shown as text and never runs;
    traversal URLs fetched by the page's context get 404."""
    sync_api, exe = _browser_or_skip()
    evil_slide = "<img src=x onerror=alert(1)><script>alert(1)<b>.png"  # no "/" in a file name
    evil_name = "<img src=y onerror=alert(2)>"
    run, slides = make_run(tmp_path, slide_name=evil_slide, size=600)
    secret = "s3cret-token"
    with _server(run, slides, "--token", secret) as base, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=ARGS)
        try:
            ctx = browser.new_context(viewport={"width": 1000, "height": 700})
            ctx.set_default_timeout(60000)
            page = ctx.new_page()
            dialogs: list[str] = []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            assert page.goto(base).status == 401
            assert page.goto(base + "static/review.js").status == 401
            assert page.goto(base + "?token=wrong-token").status == 401
            assert page.goto(base + f"?token={secret}", wait_until="domcontentloaded").status == 200
            # from now on the HttpOnly cookie carries it (a URL without the token works)
            assert page.goto(base + "#slide", wait_until="domcontentloaded").status == 200
            assert page.evaluate("document.cookie") == ""  # not readable by scripts
            page.fill("#reviewer", evil_name)
            page.press("#reviewer", "Enter")
            page.wait_for_selector("body[data-ready='1']", timeout=15000)
            page.wait_for_function("document.getElementById('item-id').textContent !== ''")
            assert page.text_content("#item-slide") == evil_slide  # shown as text
            assert page.locator("#item-slide *").count() == 0  # no element made of it
            first = _current(page)
            page.keyboard.press("n")
            page.wait_for_function(_MOVED, arg=[first], timeout=15000)
            page.goto(
                base + "#slide", wait_until="domcontentloaded"
            )  # back to the answered item's history via the API
            shown = page.evaluate(
                f"fetch('api/item/{first}').then(r => r.json()).then(b => b.answers[0].reviewer)"
            )
            assert shown == evil_name
            assert page.locator("img[src='x'], img[src='y']").count() == 0
            for url in (
                "slides/..%2F..%2Fetc%2Fpasswd.dzi",
                "slides/%2e%2e%2f%2e%2e%2fetc%2fpasswd.dzi",
                "slides/1_files/9/..%2F..%2F0_0.jpeg",
                "static/..%2Fstore.py",
                "static/%2e%2e/store.py",
            ):
                r = page.request.get(base + url)
                assert r.status in (404, 422), url
                assert b"import" not in r.body() and b"root:" not in r.body()
            # another browser (no cookie) is refused everything, tiles and API included
            other = browser.new_context().new_page()
            for url in ("", "api/queues", "slides/1.dzi", "static/openseadragon.min.js"):
                assert other.goto(base + url).status == 401, url
            page.wait_for_timeout(300)
            assert not dialogs, dialogs  # no script ran
            assert not errors, errors
        finally:
            browser.close()
    assert [r[:2] for r in _rows(run / "mitoscope.sqlite")] == [(evil_name, "Non-mitotic figure")]
