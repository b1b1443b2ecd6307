// The review page's keys and actions. The server renders the cards; this file sends labels, undo, fit and
// next-batch requests as JSON, and draws from each answer's state (and from the page's first state, in
// <script id="state">) the counts, the progress, the ranking and the labelled list, so none goes stale.
// It also shows the focused window enlarged with its axes, the frequency band, and a playhead.
(function () {
  "use strict";
  const target = document.getElementById("target").dataset.target;
  const cards = Array.from(document.querySelectorAll(".card"));
  const status = document.getElementById("status");
  const viewer = document.getElementById("viewer");
  const bandKey = "biolingual-band:" + target;
  let band = { fmin: "", fmax: "" };
  let focused = 0;

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", !!isError);
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    return answer(response);
  }

  async function answer(response) {
    let data = null;
    try { data = await response.json(); } catch (e) { data = { error: response.status + " " + response.statusText }; }
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const fmt = new Intl.NumberFormat("en-US");
  const secs = (x) => Number(x).toFixed(1);

  function scoreText(s) {
    let text = "#" + fmt.format(s.rank) + " of " + fmt.format(s.of) + " · cos " + Number(s.cosine).toFixed(3);
    if (s.probability !== null && s.probability !== undefined) text += " · p " + Number(s.probability).toFixed(3);
    return text;
  }

  // ---- what every answer carries: counts, progress, ranking, labelled list, scores of the shown cards ----
  function showState(state) {
    for (const [value, n] of Object.entries(state.counts || {})) {
      const cell = document.querySelector('[data-count="' + value + '"]');
      if (cell) cell.textContent = n;
    }
    if (state.progress) {
      document.getElementById("reviewed").textContent = fmt.format(state.progress.reviewed);
      document.getElementById("round").textContent = state.progress.round;
      document.getElementById("ranking-by").textContent = state.progress.round
        ? "the head fitted in round " + state.progress.round
        : "the seed: prompt and/or example, no labels yet used";
    }
    if (state.ranking) {
      const body = document.querySelector("#ranking tbody");
      body.replaceChildren(...state.ranking.map(function (r) {
        const row = el("tr", { "data-row": r.row });
        row.append(el("td", {}, r.rank), el("td", {}, r.row), el("td", { title: r.recording }, r.recording),
          el("td", { class: "where" }, r.where || ""), el("td", {}, secs(r.start)), el("td", {}, secs(r.end)), el("td", {}, Number(r.cosine).toFixed(3)),
          el("td", {}, r.probability === null ? "" : Number(r.probability).toFixed(3)),
          el("td", { class: r.label || "" }, r.label || ""));
        return row;
      }));
    }
    if (state.labelled) {
      document.getElementById("labelled-count").textContent = state.labelled.length;
      document.getElementById("labelled").replaceChildren(...state.labelled.map(function (item) {
        return el("li", { "data-row": item.row, "data-label": item.label, class: item.label },
          "row " + item.row + " · " + item.recording + " " + secs(item.start) + "–" + secs(item.end) + " s" +
          (item.where ? " · " + item.where : "") + " · " + item.label);
      }));
    }
    for (const [row, s] of Object.entries(state.scores || {})) {
      for (const card of cards) {
        if (card.dataset.row !== row) continue;
        card.querySelector(".rank").textContent = "#" + fmt.format(s.rank) + " of " + fmt.format(s.of);
        card.querySelector(".cos").textContent = "cos " + Number(s.cosine).toFixed(3);
        let prob = card.querySelector(".prob");
        if (s.probability === null) { if (prob) prob.remove(); continue; }
        if (!prob) {
          prob = el("span", { class: "prob", title: "probability by the fitted head (" + s.calibration + " calibration)" });
          card.querySelector(".scores").append(prob);
        }
        prob.textContent = "p " + Number(s.probability).toFixed(3);
      }
    }
    document.getElementById("batch-done").textContent = cards.filter((c) => c.dataset.label).length;
    if (cards.length) showViewer(cards[focused]);
  }

  function setLabel(row, value) {
    for (const card of cards) {
      if (card.dataset.row !== String(row)) continue;
      if (value) card.dataset.label = value; else delete card.dataset.label;
      card.querySelector(".label").textContent = value || "";
    }
  }

  function focus(i) {
    if (!cards.length) return;
    focused = Math.max(0, Math.min(cards.length - 1, i));
    cards[focused].focus();
  }

  async function label(card, value) {
    try {
      const data = await post("/api/label", { target: target, row: Number(card.dataset.row), value: value });
      setLabel(data.row, data.value);
      showState(data);
      say("window " + data.row + ": " + data.value + " (label " + data.id + ")");
    } catch (e) {
      say("label not saved: " + e.message, true);
    }
  }

  async function undo() {
    try {
      const data = await post("/api/undo", { target: target });
      if (data.undone) setLabel(data.undone.row, data.undone.now);
      showState(data);
      say(data.undone ? "undid " + data.undone.value + " on window " + data.undone.row : "nothing to undo");
    } catch (e) {
      say("undo failed: " + e.message, true);
    }
  }

  async function fit() {
    say("fitting ...");
    try {
      const data = await post("/api/fit", { target: target, rows: cards.map((c) => Number(c.dataset.row)) });
      showFigures(data.figures);
      showState(data);
      say("round " + data.progress.round + " fitted: the ranking and the scores are the new head's; " +
          "the next batch (b) comes from it");
    } catch (e) {
      say(e.message, true);
    }
  }

  function showFigures(figures) {
    const section = document.getElementById("fit-result");
    section.hidden = false;
    const old = document.getElementById("fit-warning");
    if (old) old.remove();
    if (figures.warning) {
      section.querySelector("h2").after(el("p", { class: "error", role: "alert", id: "fit-warning" }, "warning: " + figures.warning));
    }
    document.getElementById("figures").replaceChildren(...Object.entries(figures).map(function ([name, value]) {
      const row = el("tr");
      row.append(el("th", {}, name.replaceAll("_", " ")), el("td", {}, value === null ? "n/a" : String(value)));
      return row;
    }));
  }

  async function nextBatch() {
    say("choosing windows ...");
    try {
      await post("/api/next", { target: target });
      window.location.reload();  // new cards: the server renders them
    } catch (e) {
      say(e.message, true);
    }
  }

  // ---- the enlarged view of the focused window: axes, band, playhead ---------------------------------
  function specUrl(row) {
    const q = new URLSearchParams();
    if (band.fmin) q.set("fmin", band.fmin);
    if (band.fmax) q.set("fmax", band.fmax);
    const query = q.toString();
    return "/windows/" + row + "/spectrogram.png" + (query ? "?" + query : "");
  }

  function niceStep(span) {
    for (const step of [0.5, 1, 2, 5, 10, 20, 30, 60, 120]) if (span / step <= 10) return step;
    return 300;
  }

  function drawTimeAxis(start, end) {
    const axis = document.getElementById("xaxis");
    const step = niceStep(end - start);
    const ticks = [];
    for (let t = Math.ceil(start / step - 1e-9) * step; t <= end + 1e-9; t += step) {
      const tick = el("span", { class: "tick" }, String(+t.toFixed(1)));
      tick.style.left = (100 * (t - start) / (end - start)) + "%";
      ticks.push(tick);
    }
    axis.replaceChildren(...ticks);
  }

  function drawFrequencyAxis(axis) {
    document.getElementById("yaxis").replaceChildren(...axis.ticks.map(function (t) {
      const tick = el("span", { class: "tick" }, String(t.khz));
      tick.style.bottom = (100 * t.at) + "%";
      return tick;
    }));
  }

  function showViewer(card) {
    const name = card.dataset.recording;
    document.getElementById("viewer-name").textContent = name;
    document.getElementById("viewer-name").title = name;
    const where = card.dataset.where ? " · " + card.dataset.where : "";  // site and clock time, when known
    document.getElementById("viewer-time").textContent = secs(card.dataset.start) + "–" + secs(card.dataset.end) + " s" + where;
    const parts = [card.querySelector(".rank"), card.querySelector(".cos"), card.querySelector(".prob")];
    document.getElementById("viewer-scores").textContent = parts.filter(Boolean).map((p) => p.textContent).join(" · ");
    const img = document.getElementById("viewer-img");
    const url = specUrl(card.dataset.row);
    if (img.getAttribute("src") !== url) img.src = url;
    img.alt = "spectrogram of window " + card.dataset.row + ", enlarged";
    viewer.dataset.row = card.dataset.row;
    drawTimeAxis(Number(card.dataset.start), Number(card.dataset.end));
  }

  async function setBand(fmin, fmax) {
    const box = document.getElementById("band-error");
    const q = new URLSearchParams();
    if (fmin) q.set("fmin", fmin);
    if (fmax) q.set("fmax", fmax);
    try {
      const axis = await answer(await fetch("/api/frequency-axis?" + q.toString()));
      band = { fmin: fmin, fmax: fmax };
      box.hidden = true;
      try { localStorage.setItem(bandKey, JSON.stringify(band)); } catch (e) { /* private mode: not kept */ }
      drawFrequencyAxis(axis);
      for (const card of cards) {
        const img = card.querySelector("img.spec");
        if (img.getAttribute("src") !== specUrl(card.dataset.row)) img.src = specUrl(card.dataset.row);
      }
      if (cards.length) showViewer(cards[focused]);
    } catch (e) {
      box.textContent = e.message;
      box.hidden = false;
    }
  }

  // the playhead: where the playing window's audio is, over its spectrogram and the enlarged one
  function movePlayheads() {
    let playing = false;
    for (const card of cards) {
      const audio = card.querySelector("audio");
      const head = card.querySelector(".playhead");
      const on = !audio.paused || audio.currentTime > 0;
      const at = audio.duration ? Math.min(1, audio.currentTime / audio.duration) : 0;
      head.hidden = !on;
      head.style.left = (100 * at) + "%";
      if (viewer.dataset.row === card.dataset.row) {
        const big = viewer.querySelector(".playhead");
        big.hidden = !on;
        big.style.left = (100 * at) + "%";
      }
      playing = playing || !audio.paused;
    }
    if (playing) requestAnimationFrame(movePlayheads);
  }

  function togglePlay(card) {
    const audio = card.querySelector("audio");
    if (audio.paused) {
      for (const other of document.querySelectorAll("audio")) if (other !== audio) other.pause();
      audio.play().catch(function (e) {
        if (e.name !== "AbortError") showError(card, audio.src, e);  // AbortError: paused before it began
      });
    } else {
      audio.pause();
    }
  }

  // An image or audio request that failed: ask the server again for its JSON error and show it in the card.
  async function showError(card, url, fallback) {
    const box = card.querySelector(".error");
    let text = fallback ? String(fallback.message || fallback) : "could not load " + url;
    try {
      const response = await fetch(url);
      if (!response.ok) {
        const data = await response.json();
        text = data.error || text;
      }
    } catch (e) { /* keep the fallback text */ }
    box.textContent = text;
    box.hidden = false;
    card.classList.add("failed");
  }

  cards.forEach(function (card, i) {
    card.addEventListener("focus", function () { focused = i; showViewer(card); });
    card.querySelectorAll("button[data-value]").forEach(function (button) {
      button.addEventListener("click", function () { focus(i); label(card, button.dataset.value); });
    });
    const img = card.querySelector("img.spec");
    img.addEventListener("error", function () { showError(card, img.src); });
    const audio = card.querySelector("audio");
    audio.addEventListener("error", function () { showError(card, audio.src); });
    audio.addEventListener("play", function () { requestAnimationFrame(movePlayheads); });
    audio.addEventListener("pause", movePlayheads);
  });

  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("fit").addEventListener("click", fit);
  document.getElementById("next").addEventListener("click", nextBatch);
  document.getElementById("band").addEventListener("submit", function (event) {
    event.preventDefault();
    setBand(document.getElementById("band-min").value.trim(), document.getElementById("band-max").value.trim());
  });

  const keys = { y: "positive", n: "negative", u: "unsure" };
  document.addEventListener("keydown", function (event) {
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "input" || tag === "textarea" || tag === "select" || event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    if (keys[key.toLowerCase()] && cards.length) {
      event.preventDefault();
      const card = cards[focused];
      label(card, keys[key.toLowerCase()]);
      focus(focused + 1);  // on to the next window, as a reviewer goes through a batch
    } else if (key === " " && cards.length) {
      event.preventDefault();  // not a page scroll, and not the focused button's click
      togglePlay(cards[focused]);
    } else if (key === "ArrowRight" || key === "ArrowDown") {
      event.preventDefault();
      focus(focused + 1);
    } else if (key === "ArrowLeft" || key === "ArrowUp") {
      event.preventDefault();
      focus(focused - 1);
    } else if (key === "z") {
      undo();
    } else if (key === "f") {
      fit();
    } else if (key === "b") {
      nextBatch();
    }
  });

  if (!cards.length) viewer.hidden = true;
  showState(JSON.parse(document.getElementById("state").textContent));
  let saved = null;
  try { saved = JSON.parse(localStorage.getItem(bandKey) || "null"); } catch (e) { saved = null; }
  if (saved && (saved.fmin || saved.fmax)) {
    document.getElementById("band-min").value = saved.fmin || "";
    document.getElementById("band-max").value = saved.fmax || "";
  }
  setBand(saved ? saved.fmin || "" : "", saved ? saved.fmax || "" : "");
  focus(0);
})();
