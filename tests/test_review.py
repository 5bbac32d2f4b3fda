"""mitoscope review: the store (queues, answers in the SlideRunner database), the FastAPI app
(TestClient) and its safety: token, loopback default, path traversal, XSS, SQL, concurrent
reviewers, a killed server."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from mitoscope.errors import InvalidInputError
from mitoscope.io.sliderunner import read_sliderunner
from mitoscope.review import ReviewStore
from review_helpers import PROBS, make_run

pytest.importorskip("fastapi", reason="mitoscope review needs: pip install 'mitoscope[review]'")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from mitoscope.review.app import check_host, create_app


def _client(run: Path, slides: Path, **kw) -> TestClient:
    return TestClient(create_app(ReviewStore(run), slides, **kw))


def _labels(db: Path) -> list[tuple[str, str, int, float | None]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(
            "SELECT p.name, c.name, l.annoId, g.dateTime FROM Annotations_label l "
            "JOIN Persons p ON p.uid = l.person JOIN Classes c ON c.uid = l.class "
            "LEFT JOIN Log g ON g.labelId = l.uid WHERE p.name != 'mitoscope' ORDER BY l.uid"
        ).fetchall()
    finally:
        con.close()


def test_store_queues_outlines_and_wal(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path)
    store = ReviewStore(run)
    assert len(store.items) == len(PROBS)
    probs = [store.by_uid[u].probability for u in store.queues["uncertainty"]]
    assert probs[:2] == [0.52, 0.47]  # nearest the run's threshold 0.5 first
    assert store.by_uid[store.queues["hotspot"][0]].probability == PROBS[-1]  # hotspot centre
    assert sorted(store.queues["slide"]) == sorted(store.by_uid)
    assert all(len(it.outline) == 12 for it in store.items)
    con = sqlite3.connect(store.path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert set(store.progress()) == {"uncertainty", "hotspot", "slide", "second"}


def as_polygon(db: Path, uid: int, ring: list[tuple[int, int]]) -> None:
    """Store annotation ``uid`` as a SlideRunner polygon (type 3) with vertices ``ring``, as
    other tools store detections (mitoscope's own writer stores a spot at the centre)."""
    con = sqlite3.connect(db)
    try:
        with con:
            (slide,) = con.execute("SELECT slide FROM Annotations WHERE uid = ?", (uid,)).fetchone()
            con.execute("UPDATE Annotations SET type = 3 WHERE uid = ?", (uid,))
            con.execute("DELETE FROM Annotations_coordinates WHERE annoId = ?", (uid,))
            con.executemany(
                "INSERT INTO Annotations_coordinates "
                "(coordinateX, coordinateY, slide, annoId, orderIdx) VALUES (?, ?, ?, ?, ?)",
                [(x, y, slide, uid, k) for k, (x, y) in enumerate(ring)],
            )
    finally:
        con.close()


def test_a_polygon_detection_is_placed_at_its_centroid_not_its_first_vertex(
    tmp_path: Path,
) -> None:
    """The item's x, y (what the page centres the view and its marker on, what select measures
    distances with and disagreement reads its patch at) is the polygon's centroid."""
    from mitoscope.io.records import polygon_centroid

    run, slides = make_run(tmp_path)
    spot = ReviewStore(run)
    uid = spot.queues["uncertainty"][0]
    cx, cy = round(spot.by_uid[uid].x), round(spot.by_uid[uid].y)
    # an irregular pentagon around the detection; its first vertex is 9 px off the centre
    ring = [(cx + 9, cy), (cx + 2, cy + 6), (cx - 7, cy + 5), (cx - 6, cy - 4), (cx + 2, cy - 6)]
    as_polygon(run / "mitoscope.sqlite", uid, ring)
    store = ReviewStore(run)
    it = store.by_uid[uid]
    want = polygon_centroid(np.array(ring, dtype=float))
    assert (it.x, it.y) == pytest.approx(want) and abs(it.x - ring[0][0]) > 7
    assert len(it.outline) == 12  # its outline (centred on the detection) is found again
    others = [u for u in store.by_uid if u != uid]  # spots: the spot itself, as before
    assert all((store.by_uid[u].x, store.by_uid[u].y) == (spot.by_uid[u].x, spot.by_uid[u].y)
               for u in others)  # fmt: skip
    body = (
        _client(run, slides)
        .get("/api/next", params={"queue": "uncertainty", "reviewer": "alice"})
        .json()
    )
    assert body["item"]["id"] == uid
    assert (body["item"]["x"], body["item"]["y"]) == pytest.approx(want)


def test_answer_is_stored_at_once_and_survives_a_reload(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    c = _client(run, slides, reviewer="alice")
    page = c.get("/")
    assert page.status_code == 200 and "openseadragon.min.js" in page.text
    body = c.get("/api/next", params={"queue": "uncertainty", "reviewer": "alice"}).json()
    item = body["item"]
    assert item["probability"] == 0.52 and len(item["outline"]) == 12
    t0 = time.time()
    r = c.post("/api/answer", json={"item": item["id"], "answer": "atypical", "reviewer": "alice"})
    assert r.status_code == 200
    assert r.json()["progress"]["uncertainty"] == {"total": 6, "done": 1}
    (row,) = _labels(run / "mitoscope.sqlite")
    assert row[:3] == ("alice", "Atypical mitotic figure", item["id"])
    assert t0 - 1 <= row[3] <= time.time() + 1
    # a new server on the same database (browser refresh, restart): the answer is there
    c2 = _client(run, slides)
    nxt = c2.get("/api/next", params={"queue": "uncertainty", "reviewer": "alice"}).json()
    assert nxt["item"]["id"] != item["id"] and nxt["item"]["probability"] == 0.47
    hist = c2.get(f"/api/item/{item['id']}").json()["answers"]
    assert hist[0]["reviewer"] == "alice" and hist[0]["answer"] == "atypical"
    # SlideRunner's view: the reviewed class is the agreed class, both votes kept
    pa = read_sliderunner(run / "mitoscope.sqlite")
    k = list(pa.uid).index(str(item["id"]))
    assert pa.meta["class_name"][k] == "Atypical mitotic figure" and pa.n_raters[k] == 2


def test_equivocal_goes_to_a_second_reviewer(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    c = _client(run, slides)
    first = c.get("/api/next", params={"queue": "slide", "reviewer": "alice"}).json()["item"]
    c.post("/api/answer", json={"item": first["id"], "answer": "equivocal", "reviewer": "alice"})
    mine = c.get("/api/next", params={"queue": "second", "reviewer": "alice"}).json()
    assert mine["item"] is None  # never your own equivocal
    bob = c.get("/api/next", params={"queue": "second", "reviewer": "bob"}).json()
    assert bob["item"]["id"] == first["id"]
    assert bob["progress"]["second"] == {"total": 1, "done": 0}
    r = c.post("/api/answer", json={"item": first["id"], "answer": "not", "reviewer": "bob"})
    assert r.json()["progress"]["second"] == {"total": 1, "done": 1}
    assert (
        c.get("/api/next", params={"queue": "second", "reviewer": "carol"}).json()["item"] is None
    )
    assert [r[:2] for r in _labels(run / "mitoscope.sqlite")] == [
        ("alice", "Equivocal"),
        ("bob", "Non-mitotic figure"),
    ]


def test_two_reviewers_on_one_queue_get_different_items(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    c = _client(run, slides)
    seen: list[int] = []
    for _ in range(len(PROBS) // 2):
        a = c.get("/api/next", params={"queue": "uncertainty", "reviewer": "alice"}).json()["item"]
        b = c.get("/api/next", params={"queue": "uncertainty", "reviewer": "bob"}).json()["item"]
        assert a["id"] != b["id"]
        for who, it in (("alice", a), ("bob", b)):
            c.post("/api/answer", json={"item": it["id"], "answer": "mitotic", "reviewer": who})
            seen.append(it["id"])
    assert sorted(seen) == sorted(ReviewStore(run).by_uid)  # each answered once, none lost
    assert c.get("/api/queues").json()["queues"]["uncertainty"] == {"total": 6, "done": 6}


def test_bad_input_is_refused(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    c = _client(run, slides)
    uid = ReviewStore(run).items[0].uid
    for body in (
        {"item": uid, "answer": "maybe", "reviewer": "alice"},
        {"item": 99999, "answer": "not", "reviewer": "alice"},
        {"item": uid, "answer": "not", "reviewer": "mitoscope"},
        {"item": uid, "answer": "not", "reviewer": ""},
    ):
        assert c.post("/api/answer", json=body).status_code == 400, body
    assert c.get("/api/next", params={"queue": "nope", "reviewer": "a"}).status_code == 400
    form = c.post("/api/answer", content=b"item=1", headers={"content-type": "text/plain"})
    assert form.status_code in (415, 422)  # no cross-site form posts
    assert _labels(run / "mitoscope.sqlite") == []
    with pytest.raises(InvalidInputError, match="mitoscope detect"):
        ReviewStore(tmp_path / "nothing")


def test_token_and_loopback_default(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    secret = "s3cret-token-123"
    c = _client(run, slides, token=secret)
    for url in ("/", "/api/queues", "/slides/1.dzi", "/static/openseadragon.min.js"):
        assert c.get(url).status_code == 401, url
        assert c.get(url, headers={"X-Mitoscope-Token": "wrong-token"}).status_code == 401
        assert c.get(url, headers={"X-Mitoscope-Token": secret}).status_code == 200, url
    uid = ReviewStore(run).items[0].uid
    body = {"item": uid, "answer": "not", "reviewer": "eve"}
    assert c.post("/api/answer", json=body).status_code == 401
    assert _labels(run / "mitoscope.sqlite") == []
    # the page's link ?token= sets an HttpOnly cookie that carries the later requests
    c2 = _client(run, slides, token=secret)
    r = c2.get("/", params={"token": secret})
    assert r.status_code == 200 and "httponly" in r.headers["set-cookie"].lower()
    assert c2.get("/api/queues").status_code == 200
    check_host("127.0.0.1", None)
    with pytest.raises(InvalidInputError, match="--token"):
        check_host("0.0.0.0", None)
    check_host("0.0.0.0", secret)


def test_only_slides_under_the_slide_dir_are_served(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path, slide_name="../outside.png")
    # the database names a file outside --slides: it exists, but is never served
    assert (tmp_path / "outside.png").is_file()
    c = _client(run, slides)
    assert c.get("/slides/1.dzi").status_code == 404
    assert c.get("/slides/1_files/9/0_0.jpeg").status_code == 404
    run2, slides2 = make_run(tmp_path / "ok")
    (slides2 / "link.png").symlink_to(tmp_path / "outside.png")
    c2 = _client(run2, slides2)
    assert c2.get("/slides/1.dzi").status_code == 200
    for url in (
        "/slides/..%2F..%2Fetc%2Fpasswd.dzi",
        "/slides/..%2Foutside.png.dzi",
        "/slides/%2e%2e%2f%2e%2e%2fetc%2fpasswd.dzi",
        "/slides/1_files/9/..%2F..%2F0_0.jpeg",
        "/slides/1_files/99/0_0.jpeg",
        "/slides/1_files/9/-1_0.jpeg",
        "/slides/2.dzi",
        "/static/..%2Fstore.py",
        "/static/%2e%2e/store.py",
        "/static/../store.py",
        "/static/..%2F..%2F..%2Fpyproject.toml",
    ):
        r = c2.get(url)
        assert r.status_code in (404, 422), url
        assert b"import" not in r.content and b"root:" not in r.content


def test_text_is_escaped_no_xss(tmp_path: Path) -> None:
    evil = "<script>alert(1)<img src=x onerror=alert(1)>.png"  # no "/" in file names
    run, slides = make_run(tmp_path, slide_name=evil)
    c = _client(run, slides, reviewer='"><script>alert(2)<img src=y>')
    html = c.get("/").text
    assert "<script>alert" not in html and "<img src=" not in html
    assert "&lt;script&gt;alert(2)" in html  # shown, escaped
    assert "script-src 'self'" in c.get("/").headers["content-security-policy"]
    item = c.get("/api/next", params={"queue": "slide", "reviewer": "x"}).json()["item"]
    assert item["slide"] == evil  # JSON data; the page sets it with textContent only
    js = (Path(__file__).parents[1] / "src/mitoscope/review/static/review.js").read_text()
    assert "innerHTML" not in js.replace("never innerHTML", "")
    assert c.get(f"/slides/{item['slide_id']}.dzi").status_code == 200


def test_sql_is_parameterised(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    c = _client(run, slides)
    name = "x'); DROP TABLE Annotations; --"
    uid = ReviewStore(run).items[0].uid
    r = c.post("/api/answer", json={"item": uid, "answer": "not", "reviewer": name})
    assert r.status_code == 200
    assert _labels(run / "mitoscope.sqlite")[0][0] == name
    assert len(ReviewStore(run).items) == len(PROBS)


def _answer_all(db: str, who: str) -> None:
    store = ReviewStore(db)
    for uid in store.queues["slide"]:
        store.answer(uid, who, "mitotic")


def test_concurrent_reviewers_lose_no_answer(tmp_path: Path) -> None:
    run, _ = make_run(tmp_path, probs=tuple(0.3 + 0.01 * i for i in range(40)), size=600)
    db = str(run / "mitoscope.sqlite")
    ReviewStore(db)  # the server opens it first (WAL)
    threads = [threading.Thread(target=_answer_all, args=(db, f"t{i}")) for i in range(3)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_answer_all, args=(db, f"p{i}")) for i in range(2)]
    for w in (*procs, *threads):  # fork before any thread holds a connection
        w.start()
    for w in (*threads, *procs):
        w.join(60)
    assert all(p.exitcode == 0 for p in procs)
    rows = _labels(run / "mitoscope.sqlite")
    assert len(rows) == 5 * 40
    assert len({(r[0], r[2]) for r in rows}) == 5 * 40 and all(r[3] for r in rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_killed_server_loses_nothing_answered(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    port = _free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mitoscope.review", str(run), "--slides", str(slides),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # a loaded machine starts the server slowly
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{base}/api/queues", timeout=5).read()
                break
            except OSError:
                time.sleep(0.2)
        uid = ReviewStore(run).queues["slide"][0]
        req = urllib.request.Request(
            f"{base}/api/answer",
            data=f'{{"item": {uid}, "answer": "not", "reviewer": "alice"}}'.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert urllib.request.urlopen(req, timeout=60).status == 200
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert [r[:3] for r in _labels(run / "mitoscope.sqlite")] == [
        ("alice", "Non-mitotic figure", uid)
    ]


def test_cli_refuses_other_hosts_without_token(tmp_path: Path) -> None:
    run, slides = make_run(tmp_path)
    r = subprocess.run(
        [sys.executable, "-m", "mitoscope.review", str(run), "--slides", str(slides),
         "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "--token" in r.stderr


def test_select_prefers_uncertain_and_spreads_across_slides(tmp_path: Path) -> None:
    from mitoscope.review.select import select_for_review, write_queues

    run_a, slides = make_run(tmp_path / "a", probs=(0.50, 0.51, 0.52, 0.99, 0.98))
    run_b, _ = make_run(tmp_path / "b", probs=(0.60, 0.97, 0.96))
    store_a = ReviewStore(run_a)
    done = next(u for u in store_a.by_uid if store_a.by_uid[u].probability == 0.50)
    store_a.answer(done, "alice", "not")  # answered ones are not chosen again
    items = select_for_review([run_a, run_b], budget=3)
    chosen = [(Path(i["db"]).parent.parent.name, i["probability"]) for i in items]
    # scores u * (1 + picked on its slide): 0.51 -> 0.01, 0.52 -> 0.02 * 2, b's 0.60 -> 0.10
    assert chosen[0] == ("a", 0.51)
    assert ("b", 0.60) in chosen and len(chosen) == 3
    assert sorted(p for _, p in chosen) == [0.51, 0.52, 0.60]
    paths = write_queues(items, None)
    assert sorted(p.parent for p in paths) == sorted([run_a, run_b])
    store = ReviewStore(run_a)  # picks up run_a/review_queue.json
    assert [store.by_uid[u].probability for u in store.queues["selected"]] == [0.51, 0.52]
    c = TestClient(create_app(store, slides))
    nxt = c.get("/api/next", params={"queue": "selected", "reviewer": "bob"}).json()
    assert nxt["item"]["probability"] == 0.51
    assert nxt["progress"]["selected"] == {"total": 2, "done": 0}
    with pytest.raises(InvalidInputError, match="budget"):
        select_for_review([run_a], budget=0)


def test_reviewed_labels_latest_answer_wins_and_equivocal_is_down_weighted(
    tmp_path: Path,
) -> None:
    from mitoscope.review.labels import reviewed_labels

    run, _ = make_run(tmp_path)
    store = ReviewStore(run)
    u = store.queues["slide"]
    store.answer(u[0], "alice", "mitotic")
    store.answer(u[1], "alice", "equivocal")  # contested: decided by bob
    store.answer(u[1], "bob", "not")
    store.answer(u[2], "alice", "equivocal")  # still equivocal after bob
    store.answer(u[2], "bob", "equivocal")
    store.answer(u[3], "alice", "not")  # bob changes it: the latest answer wins
    store.answer(u[3], "bob", "atypical")
    got = {lb.uid: lb for lb in reviewed_labels(run)}
    assert sorted(got) == sorted([u[0], u[1], u[3]])  # the equivocal one is left out
    assert got[u[0]].is_mf and not got[u[0]].atypical and got[u[0]].weight == 1.0
    assert not got[u[1]].is_mf and got[u[1]].weight == 1.0
    assert got[u[1]].reviewers == ("alice", "bob")
    assert got[u[3]].is_mf and got[u[3]].atypical
    it = store.by_uid[u[3]]
    assert (got[u[3]].slide, got[u[3]].x, got[u[3]].y) == (it.slide_name, it.x, it.y)
    # down-weighting: the contested item at half weight; the equivocal one kept as a mitosis
    low = {lb.uid: lb for lb in reviewed_labels(
        store, contested_weight=0.5, equivocal_as="mitotic", equivocal_weight=0.2
    )}  # fmt: skip
    assert low[u[1]].weight == 0.5 and not low[u[1]].is_mf
    assert low[u[2]].is_mf and low[u[2]].weight == 0.2
    assert low[u[0]].weight == 1.0 and low[u[3]].weight == 1.0
    # the sliderunner training source reads the same classes (latest answer, equivocal out)
    ann = read_sliderunner(run / "mitoscope.sqlite")
    cls = dict(zip(ann.uid.tolist(), ann.meta["class_name"].tolist(), strict=True))
    assert [cls[str(k)] for k in u[:4]] == [
        "Mitotic figure", "Non-mitotic figure", "Equivocal", "Atypical mitotic figure"
    ]  # fmt: skip
    for bad in ({"contested_weight": 0.0}, {"equivocal_weight": 1.5}, {"equivocal_as": "maybe"}):
        with pytest.raises(InvalidInputError):
            reviewed_labels(store, **bad)
