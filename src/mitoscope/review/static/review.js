/* mitoscope review page: one detection at a time in OpenSeadragon, one key per answer.
   All text goes through textContent (never innerHTML); every answer is POSTed at once. */
(function () {
  "use strict";
  var KEYS = { m: "mitotic", a: "atypical", n: "not", e: "equivocal",
               "1": "mitotic", "2": "atypical", "3": "not", "4": "equivocal" };
  var CONTEXT_PX = 160;
  var $ = function (id) { return document.getElementById(id); };
  var reviewerInput = $("reviewer"), queueSelect = $("queue"), status = $("status");
  var current = null, currentSlide = null, skipped = [], busy = false, overlay = null, seq = 0;

  var viewer = OpenSeadragon({
    id: "viewer", prefixUrl: "static/images/", showNavigator: true,
    maxZoomPixelRatio: 4, visibilityRatio: 0.2, crossOriginPolicy: false
  });

  var savedReviewer = window.localStorage.getItem("mitoscope.reviewer");
  if (!reviewerInput.value && savedReviewer) { reviewerInput.value = savedReviewer; }
  var savedQueue = window.location.hash.slice(1) || window.localStorage.getItem("mitoscope.queue");
  if (savedQueue) {
    for (var i = 0; i < queueSelect.options.length; i++) {
      if (queueSelect.options[i].value === savedQueue) { queueSelect.value = savedQueue; }
    }
  }

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  function api(url, options) {
    return fetch(url, options).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.detail ? String(body.detail) : ("HTTP " + r.status)); }
        return body;
      });
    });
  }

  function showProgress(progress) {
    var tbody = $("progress").querySelector("tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    Object.keys(progress).forEach(function (name) {
      var p = progress[name], tr = document.createElement("tr");
      if (name === queueSelect.value) { tr.className = "current"; }
      [name, p.done + " / " + p.total,
       p.total ? Math.round(100 * p.done / p.total) + " %" : "–"].forEach(function (t) {
        var td = document.createElement("td"); td.textContent = t; tr.appendChild(td);
      });
      tr.dataset.queue = name;
      tbody.appendChild(tr);
    });
  }

  function fmt(v) { return v === null || v === undefined ? "–" : Number(v).toFixed(3); }

  function showItem(item, answers) {
    $("item-id").textContent = item ? "#" + item.id : "";
    $("item-slide").textContent = item ? item.slide : "";
    $("item-pos").textContent = item ? Math.round(item.x) + ", " + Math.round(item.y) + " px" : "";
    $("item-p").textContent = item ? fmt(item.probability) + " (threshold " + fmt(item.threshold) + ")" : "";
    $("item-atyp").textContent = item ? fmt(item.atypical_probability) : "";
    $("item-class").textContent = item ? item.model_class : "";
    $("item-answers").textContent = (answers || []).map(function (a) {
      return a.reviewer + ": " + a.answer;
    }).join("; ") || "none yet";
  }

  function itemRect(item) {
    return viewer.viewport.imageToViewportRectangle(
      item.x - CONTEXT_PX, item.y - CONTEXT_PX, 2 * CONTEXT_PX, 2 * CONTEXT_PX);
  }

  function drawOutline(item) {
    if (overlay) { viewer.removeOverlay(overlay); overlay = null; }
    var ns = "http://www.w3.org/2000/svg";
    var pts = item.outline && item.outline.length >= 3 ? item.outline : null;
    var x0, y0, x1, y1;
    if (pts) {
      x0 = Math.min.apply(null, pts.map(function (p) { return p[0]; }));
      y0 = Math.min.apply(null, pts.map(function (p) { return p[1]; }));
      x1 = Math.max.apply(null, pts.map(function (p) { return p[0]; }));
      y1 = Math.max.apply(null, pts.map(function (p) { return p[1]; }));
    } else {
      x0 = item.x - 20; y0 = item.y - 20; x1 = item.x + 20; y1 = item.y + 20;
    }
    var pad = 6; x0 -= pad; y0 -= pad; x1 += pad; y1 += pad;
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "outline");
    svg.setAttribute("viewBox", x0 + " " + y0 + " " + (x1 - x0) + " " + (y1 - y0));
    svg.setAttribute("preserveAspectRatio", "none");
    var shape;
    if (pts) {
      shape = document.createElementNS(ns, "polygon");
      shape.setAttribute("points", pts.map(function (p) { return p[0] + "," + p[1]; }).join(" "));
    } else {
      shape = document.createElementNS(ns, "circle");
      shape.setAttribute("cx", item.x); shape.setAttribute("cy", item.y); shape.setAttribute("r", 18);
    }
    shape.setAttribute("fill", "none");
    shape.setAttribute("stroke", "#00ff66");
    shape.setAttribute("stroke-width", "2");
    shape.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(shape);
    overlay = svg;
    viewer.addOverlay({ element: svg,
      location: viewer.viewport.imageToViewportRectangle(x0, y0, x1 - x0, y1 - y0) });
  }

  function goTo(item) {
    var place = function () {
      drawOutline(item);
      viewer.viewport.fitBounds(itemRect(item), true);
    };
    if (currentSlide === item.slide_id) { place(); return; }
    currentSlide = item.slide_id;
    viewer.addOnceHandler("open", place);
    viewer.open("slides/" + item.slide_id + ".dzi");
  }

  function reviewer() { return reviewerInput.value.trim(); }

  function loadNext() {
    if (!reviewer()) { say("Enter your name as reviewer first.", true); reviewerInput.focus(); return; }
    var q = queueSelect.value;
    var url = "api/next?queue=" + encodeURIComponent(q) + "&reviewer=" +
      encodeURIComponent(reviewer()) + "&skip=" + encodeURIComponent(skipped.join(","));
    var mine = ++seq;  // only the latest request's answer is shown
    busy = true;
    return api(url).then(function (body) {
      if (mine !== seq) { return; }
      showProgress(body.progress);
      current = body.item;
      if (!current) {
        showItem(null, []);
        say("Queue '" + q + "' is done for you.", false);
      } else {
        showItem(current, body.answers);
        goTo(current);
      }
    }).catch(function (err) { if (mine === seq) { say(err.message, true); } })
      .then(function () {
        if (mine === seq) { busy = false; document.body.dataset.ready = "1"; }
      });
  }

  function answer(value) {
    if (!current || busy) { return; }
    busy = true;
    var item = current;
    api("api/answer", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ item: item.id, answer: value, reviewer: reviewer() })
    }).then(function () {
      say("Saved #" + item.id + ": " + value, false);
      busy = false;
      return loadNext();
    }).catch(function (err) { busy = false; say("Not saved: " + err.message, true); });
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.target === reviewerInput || ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var k = ev.key.toLowerCase();
    if (KEYS[k]) { ev.preventDefault(); answer(KEYS[k]); }
    else if (k === "s" && current) { skipped.push(current.id); loadNext(); }
    else if (k === "h" && current) { viewer.viewport.fitBounds(itemRect(current)); }
  });
  Array.prototype.forEach.call(document.querySelectorAll("button.answer"), function (b) {
    b.addEventListener("click", function () { answer(b.dataset.answer); });
  });
  $("skip").addEventListener("click", function () {
    if (current) { skipped.push(current.id); loadNext(); }
  });
  $("home").addEventListener("click", function () {
    if (current) { viewer.viewport.fitBounds(itemRect(current)); }
  });
  queueSelect.addEventListener("change", function () {
    window.localStorage.setItem("mitoscope.queue", queueSelect.value);
    window.location.hash = queueSelect.value;
    skipped = []; loadNext();
  });
  reviewerInput.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter") { reviewerInput.blur(); }  // then the answer keys work
  });
  reviewerInput.addEventListener("change", function () {
    window.localStorage.setItem("mitoscope.reviewer", reviewer());
    skipped = []; loadNext();
  });
  loadNext();
})();
