// The review page's keys and actions. The server renders everything; this file only sends labels,
// undo, fit and next-batch requests as JSON and updates the counts and the card that changed.
(function () {
  "use strict";
  const target = document.getElementById("target").dataset.target;
  const cards = Array.from(document.querySelectorAll(".card"));
  const status = document.getElementById("status");
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
    let data = null;
    try { data = await response.json(); } catch (e) { data = { error: response.status + " " + response.statusText }; }
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function showCounts(counts) {
    for (const [value, n] of Object.entries(counts)) {
      const cell = document.querySelector('[data-count="' + value + '"]');
      if (cell) cell.textContent = n;
    }
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
      showCounts(data.counts);
      say("window " + data.row + ": " + data.value + " (label " + data.id + ")");
    } catch (e) {
      say("label not saved: " + e.message, true);
    }
  }

  async function undo() {
    try {
      const data = await post("/api/undo", { target: target });
      showCounts(data.counts);
      if (data.undone) {
        setLabel(data.undone.row, data.undone.now);
        say("undid " + data.undone.value + " on window " + data.undone.row);
      } else {
        say("nothing to undo");
      }
    } catch (e) {
      say("undo failed: " + e.message, true);
    }
  }

  async function reloadAfter(url, busy) {
    say(busy);
    try {
      await post(url, { target: target });
      window.location.reload();
    } catch (e) {
      say(e.message, true);
    }
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
    card.addEventListener("focus", function () { focused = i; });
    card.querySelectorAll("button[data-value]").forEach(function (button) {
      button.addEventListener("click", function () { focus(i); label(card, button.dataset.value); });
    });
    const img = card.querySelector("img");
    img.addEventListener("error", function () { showError(card, img.src); });
    const audio = card.querySelector("audio");
    audio.addEventListener("error", function () { showError(card, audio.src); });
  });

  document.getElementById("undo").addEventListener("click", undo);
  document.getElementById("fit").addEventListener("click", function () { reloadAfter("/api/fit", "fitting ..."); });
  document.getElementById("next").addEventListener("click", function () { reloadAfter("/api/next", "choosing windows ..."); });

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
      reloadAfter("/api/fit", "fitting ...");
    } else if (key === "b") {
      reloadAfter("/api/next", "choosing windows ...");
    }
  });

  focus(0);
})();
