"""The review page in a real browser: Debian's headless Chromium driven by Playwright.

A reviewer opens the page over recorder-style files (``SITE-A/SITE-A_20240512_050000.WAV`` ...: names that
differ only in the hour and the site), enters a text target, reads on each card the site and clock time of the
window where the deployments table gives the recording's timezone, else the full recording name, and its rank
and cosine, sees the focused window enlarged with time and frequency axes, narrows the frequency band, labels ten
windows with the keyboard (y/n by the recording each window comes from) while the labelled list, the
ranking's labels and the progress follow without a reload, plays one with the space bar and sees the playhead
move, fits and sees the ranking, the round and the scores change in place, takes the next batch, downloads a
Raven table, reloads and sees the labels, and sees the error of a window whose recording went missing.
Screenshots of the labelling view and of the ranking after the fit go to $BIOLINGUAL_SCREENSHOTS
(docs/images for the docs) or to the test's tmp folder.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review page needs the agile extra")

from biolingual.agile.app import create_app
from biolingual.agile.server import ReviewServer
from biolingual.agile.session import AgileSession

from .test_agile_app import build_index

sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (the test extra)")

# recorder files: the names differ only where the hour and the site are
OWL, PEEPER, LOON = (
    "SITE-A/SITE-A_20240512_050000.WAV",
    "SITE-A/SITE-A_20240512_060000.WAV",
    "SITE-B/SITE-B_20240512_050000.flac",
)
RECORDINGS = {OWL: ("Barred Owl", 60.0), PEEPER: ("Spring Peeper", 40.0), LOON: ("Common Loon", 40.0)}
# the deployments table gives the timezone of the recorder that made the owl's recording (the others are not in it
# yet): its cards show the site and the clock time of the window, the others' their recording's name
DEPLOYMENTS = "site,latitude,longitude,pattern,timezone\nSITE-A,4.61,-74.08,SITE-A/*_050000.WAV,America/Bogota\n"
PLACED = {OWL: ("SITE-A", dt.datetime(2024, 5, 12, 5))}

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
TIMEOUT_MS = 60_000  # a loaded 2-core machine: fitting and first spectrograms take seconds, not minutes

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (make test installs Debian's chromium package)"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory, saved_model):
    root = tmp_path_factory.mktemp("browser")
    index_dir = build_index(root, saved_model, recordings=RECORDINGS, deployments=DEPLOYMENTS)
    with ReviewServer(create_app(AgileSession(index_dir)), "127.0.0.1", 0) as server:
        yield server, root


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def _ranking(page) -> list[str]:
    return page.locator("#ranking tbody tr").evaluate_all("rows => rows.map(r => r.dataset.row)")


def _spectrograms_drawn(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.spec')].every(i => i.complete && i.naturalWidth > 0)"
    )


def test_review_in_the_browser(served, browser, tmp_path):
    server, root = served
    shots = Path(os.environ.get("BIOLINGUAL_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    expect = sync_api.expect
    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # a text target
    page.goto(server.url + "/")
    page.fill("#name", "Barred Owl")
    page.fill("#prompt", "The sound of a Barred Owl hooting")
    page.click("#start")
    expect(page.locator("h1")).to_have_text("Barred Owl")
    cards = page.locator(".card")
    expect(cards).to_have_count(16)
    before = _ranking(page)
    assert len(before) == 20
    expect(page.locator("#reviewed")).to_have_text("0")
    expect(page.locator("#round")).to_have_text("0")

    # each card says where and when its window was recorded: the site and the clock time (the recording's start
    # plus the window's offset, in the recording's timezone) where the deployments table gives them, else the
    # recording's name in full (relative to the recordings' folder), the end where recorder files differ always
    # visible; the full name on hover either way. The batch of 16 of 25 windows holds at least 2 of the owl's 11
    # (placed) and 5 of the 14 others (named). Then its rank among the 25 windows and the cosine (no probability
    # before a fit)
    names = cards.evaluate_all("cards => cards.map(c => c.querySelector('.name').title)")
    assert set(names) <= {OWL, PEEPER, LOON} and OWL in names and set(names) - {OWL}
    shown = cards.evaluate_all("""cards => cards.map(c => {
        const name = c.querySelector('.name'), end = name.lastElementChild;
        return [name.textContent, Number(c.dataset.start), end.scrollWidth <= end.clientWidth + 1,
                end.getBoundingClientRect().right <= name.getBoundingClientRect().right + 1];
    })""")
    for name, (text, start, fits, inside) in zip(names, shown):
        if name in PLACED:
            site, began = PLACED[name]
            assert text == f"{site} · {began + dt.timedelta(seconds=start):%Y-%m-%d %H:%M:%S}", (name, text, start)
        else:
            assert text == name, (name, text)
        assert fits and inside, (name, text)
    card_rows = cards.evaluate_all("cards => cards.map(c => c.dataset.row)")
    placed = {row: text for row, name, (text, *_) in zip(card_rows, names, shown) if name in PLACED}
    named = next(i for i, name in enumerate(names) if name not in PLACED)
    narrow = cards.nth(named).evaluate("""c => {
        c.style.width = '240px';  // a card too narrow for the name: the middle gives way, the end stays
        const head = c.querySelector('.name .head'), tail = c.querySelector('.name .tail');
        const out = [head.scrollWidth > head.clientWidth, tail.scrollWidth <= tail.clientWidth + 1,
                     tail.getBoundingClientRect().right <= c.getBoundingClientRect().right, tail.textContent];
        c.style.width = '';
        return out;
    }""")
    name = names[named]
    assert (
        narrow[:3] == [True, True, True] and name.endswith(narrow[3]) and narrow[3].endswith("0000" + Path(name).suffix)
    )
    expect(cards.nth(0).locator(".rank")).to_have_text(re.compile(r"^#\d+ of 25$"))
    expect(cards.nth(0).locator(".cos")).to_have_text(re.compile(r"^cos -?[01]\.\d{3}$"))
    expect(page.locator(".card .prob")).to_have_count(0)

    # the focused window enlarged, with time (s) and frequency (kHz) axes, and the band narrowed to 1-4 kHz
    viewer = page.locator("#viewer")
    expect(viewer).to_have_attribute("data-row", cards.nth(0).get_attribute("data-row"))
    expect(page.locator("#viewer-name")).to_have_text(names[0])  # the enlarged window: its name, and where and when
    where = f" · {shown[0][0]}" if names[0] in PLACED else ""
    expect(page.locator("#viewer-time")).to_have_text(re.compile(rf"^\d+\.\d–\d+\.\d s{re.escape(where)}$"))
    page.wait_for_function(
        "() => { const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth > 0; }"
    )
    big = page.locator("#viewer-img").bounding_box()
    small = cards.nth(0).locator("img.spec").bounding_box()
    assert big["width"] >= 3 * small["width"] and big["height"] >= 2 * small["height"], (big, small)
    expect(page.locator("#xaxis .tick").first).to_be_visible()
    start, end = (float(cards.nth(0).get_attribute(a)) for a in ("data-start", "data-end"))
    xticks = [float(t) for t in page.locator("#xaxis .tick").all_text_contents()]
    assert len(xticks) >= 3 and start <= min(xticks) and max(xticks) <= end
    full = [float(t) for t in page.locator("#yaxis .tick").all_text_contents()]
    assert len(full) >= 4 and max(full) >= 5
    page.fill("#band-min", "4")
    page.fill("#band-max", "1")
    page.click("#band-apply")
    expect(page.locator("#band-error")).to_contain_text("below its maximum")
    page.fill("#band-min", "1")
    page.fill("#band-max", "4")
    page.click("#band-apply")
    expect(page.locator("#band-error")).to_be_hidden()
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.spec'), document.getElementById('viewer-img')]"
        ".every(i => i.src.includes('fmin=1&fmax=4'))"
    )
    _spectrograms_drawn(page)
    band = [float(t) for t in page.locator("#yaxis .tick").all_text_contents()]
    assert min(band) >= 1 and max(band) <= 4 and {1.0, 2.0, 3.0} <= set(band), band
    axis = page.evaluate("async () => (await fetch('/api/frequency-axis?fmin=1&fmax=4')).json()")
    whole = page.evaluate("async () => (await fetch('/api/frequency-axis')).json()")
    assert axis["rows"] < whole["rows"]  # the band's mel rows only, drawn the full height of the view
    assert page.evaluate("() => document.getElementById('viewer-img').naturalHeight") == 2 * axis["rows"]
    cards.nth(0).focus()

    # ten windows labelled from the keyboard: y for the owl's recording, n for the others. The batch of 16
    # of 25 windows holds at least 5 of the 14 not from the owl and 2 of its 11; the first nine cards may
    # be one kind, so the tenth is the first card of the other kind if needed (reached with the arrows).
    recordings = cards.evaluate_all("cards => cards.map(c => c.dataset.recording)")
    kinds = ["positive" if r == OWL else "negative" for r in recordings]
    chosen = list(range(9))
    missing = {"positive", "negative"} - {kinds[i] for i in chosen}
    chosen.append(next(i for i in range(9, 16) if kinds[i] in missing) if missing else 9)
    expect(cards.nth(0)).to_be_focused()
    at, truth = 0, {}
    for i in chosen:
        for _ in range(i - at):
            page.keyboard.press("ArrowRight")
        card = cards.nth(i)
        expect(card).to_be_focused()
        truth[card.get_attribute("data-row")] = kinds[i]
        page.keyboard.press("y" if kinds[i] == "positive" else "n")  # labels it and moves on to the next card
        expect(card).to_have_attribute("data-label", kinds[i])
        at = i + 1
    assert len(truth) == 10 and set(truth.values()) == {"positive", "negative"}
    positives = sum(v == "positive" for v in truth.values())
    expect(page.locator('[data-count="positive"]')).to_have_text(str(positives))
    expect(page.locator('[data-count="negative"]')).to_have_text(str(10 - positives))
    # with no reload: the progress, the labelled list (names in full) and the ranking's labels follow
    expect(page.locator("#reviewed")).to_have_text("10")
    expect(page.locator("#batch-done")).to_have_text("10")
    expect(page.locator("#labelled li")).to_have_count(10)
    for row, value in truth.items():
        item = page.locator(f'#labelled li[data-row="{row}"]')
        expect(item).to_have_attribute("data-label", value)
        expect(item).to_contain_text(OWL if value == "positive" else "SITE-")
        if row in placed:  # the list says where and when too, as the card does
            expect(item).to_contain_text(placed[row])
        if row in before:
            expect(page.locator(f'#ranking tr[data-row="{row}"] td.where')).to_have_text(placed.get(row, ""))
            expect(page.locator(f'#ranking tr[data-row="{row}"] td').last).to_have_text(value)

    # arrows move, the space bar plays the focused window (a WAV the server cut from the recording)
    page.keyboard.press("ArrowLeft")
    last = chosen[-1]
    expect(cards.nth(last)).to_be_focused()
    with page.expect_response(lambda r: r.url.endswith("/audio.wav")) as response:
        page.keyboard.press(" ")
    assert response.value.status == 200 and response.value.headers["content-type"] == "audio/wav"
    page.wait_for_function(f"() => document.querySelectorAll('audio')[{last}].currentTime > 0")  # it plays
    # the playhead moves over the window's spectrogram and the enlarged one
    playhead = "parseFloat(document.querySelector('#viewer .playhead').style.left || '0')"
    page.wait_for_function(f"() => !document.querySelector('#viewer .playhead').hidden && {playhead} > 0")
    at = page.evaluate(f"() => {playhead}")
    page.wait_for_function(f"() => {playhead} > {at}")
    expect(cards.nth(last).locator(".playhead")).to_be_visible()
    page.keyboard.press(" ")
    page.wait_for_function(f"() => document.querySelectorAll('audio')[{last}].paused")
    _spectrograms_drawn(page)
    expect(page.locator(".card.failed")).to_have_count(0)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "review-labelling.png"))

    # a reload shows the stored labels, and the band chosen
    page.reload()
    for row, value in truth.items():
        expect(page.locator(f'.card[data-row="{row}"]')).to_have_attribute("data-label", value)
    expect(page.locator("#band-min")).to_have_value("1")

    # fit and rescore, in place (no reload): the ranking, the round and the cards' scores change, figures show
    page.evaluate("() => { window.notReloaded = true; }")
    ranks = cards.evaluate_all("cards => cards.map(c => c.querySelector('.rank').textContent)")
    page.click("#fit")
    expect(page.locator("#round")).to_have_text("1")
    expect(page.locator("#fit-result")).to_be_visible()
    expect(page.locator("#figures")).to_contain_text("labels used")
    expect(page.locator("#ranking-by")).to_contain_text("round 1")
    after = _ranking(page)
    assert len(after) == 20 and after != before
    assert page.evaluate("() => window.notReloaded === true")
    assert cards.evaluate_all("cards => cards.map(c => c.querySelector('.rank').textContent)") != ranks
    expect(page.locator("#labelled li")).to_have_count(10)
    for row in set(after) & set(truth):
        expect(page.locator(f'#ranking tr[data-row="{row}"] td').last).to_have_text(truth[row])
    page.locator("#fit-result").evaluate("e => e.scrollIntoView()")
    page.screenshot(path=str(shots / "review-ranking.png"))

    # the next batch comes from the new head: none of the labelled windows, the list of labels still holds them
    page.keyboard.press("b")
    expect(page.locator(".card[data-label]")).to_have_count(0)
    page.wait_for_function("() => window.notReloaded === undefined")
    expect(page.locator("#round")).to_have_text("1")
    for row, value in truth.items():
        expect(page.locator(f'#labelled li[data-row="{row}"]')).to_have_attribute("data-label", value)
        expect(page.locator(f'.card[data-row="{row}"]')).to_have_count(0)

    # the Raven table download
    with page.expect_download() as download:
        page.click("#export-raven")
    table = tmp_path / download.value.suggested_filename
    download.value.save_as(table)
    assert table.name.lower() == "barred-owl.table.1.selections.txt"  # the target slug (its case is vocabulary.slug's)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == positives  # the selections are the windows labelled positive
    assert {Path(r["Begin File"]).name for r in rows} == {Path(OWL).name}

    # a window whose recording went missing shows its error in the page, and the page goes on working
    first = page.locator(".card").nth(0)
    missing = root / "rec" / first.get_attribute("data-recording")
    moved = missing.with_suffix(".moved")
    missing.rename(moved)
    try:
        page.reload()
        error = page.locator(".card").nth(0).locator(".error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("is missing")
        page.keyboard.press("u")
        expect(page.locator(".card").nth(0)).to_have_attribute("data-label", "unsure")
        expect(page.locator('[data-count="unsure"]')).to_have_text("1")
        page.keyboard.press("z")  # undo
        expect(page.locator('[data-count="unsure"]')).to_have_text("0")
    finally:
        moved.rename(missing)
    assert not errors, errors
    context.close()


FOREIGN_PAGE = """<!doctype html><title>waiting</title>
<script>
// a page on another origin (another port) that tries to label through the visitor's browser: a text/plain POST
// (no CORS preflight needed), a JSON one (needs a preflight, never granted), and from a sandboxed iframe
// (Origin: null) the same text/plain label, an undo and the form that adds a target
const review = "REVIEW";
const label = JSON.stringify({target: "Foreign", row: "3", value: "negative"});
const seen = {};
let iframeDone = false, mainDone = false;
function finish() { if (iframeDone && mainDone) document.title = "done " + JSON.stringify(seen); }
window.addEventListener("message", function (e) { seen.iframe = e.data; iframeDone = true; finish(); });
(async function () {
  try {
    await fetch(review + "/api/label",
                {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: label});
    seen.plain = "sent";
  } catch (e) { seen.plain = "failed"; }
  try {
    const r = await fetch(review + "/api/label",
                          {method: "POST", headers: {"Content-Type": "application/json"}, body: label});
    seen.json = r.status;
  } catch (e) { seen.json = "blocked"; }
  mainDone = true; finish();
})();
</script>
<iframe sandbox="allow-scripts allow-forms" srcdoc='
<form method="post" action="REVIEW/targets" id="f">
<input name="name" value="Sandboxed target"><input name="prompt" value="owl"></form>
<script>
(async function () {
  const opts = {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}};
  await fetch("REVIEW/api/label", {...opts, body: JSON.stringify({target: "Foreign", row: "4", value: "positive"})});
  await fetch("REVIEW/api/undo", {...opts, body: JSON.stringify({target: "Foreign"})});
  parent.postMessage("fetched", "*");
  document.getElementById("f").submit();
})();
</script>'></iframe>
"""


def test_a_foreign_page_cannot_write_through_the_browser(served, browser, http_server):
    """A page served from another port, and a sandboxed iframe in it (Origin: null), post labels, an undo and a
    new target to the review page: every write is refused (403, or blocked at the CORS preflight) and nothing is
    stored; the page's own requests go on working (test_review_in_the_browser). What reached the page is recorded
    by the server itself: Chromium reports a sandboxed iframe's responses to the page's events only sometimes."""
    import time
    from http.server import BaseHTTPRequestHandler

    from biolingual.agile.labels import LabelStore

    _, root = served
    store = LabelStore(root / "index")
    store.add_target("Foreign")
    store.label("Foreign", 4, "negative", "test")  # what the sandboxed undo would remove
    guarded = create_app(AgileSession(root / "index"))
    answered = []  # (method, path, status) of every request that reached the review page

    async def recording(scope, receive, send):
        async def answer(message):
            if message["type"] == "http.response.start":
                answered.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        await guarded(scope, receive, answer if scope["type"] == "http" else send)

    with ReviewServer(recording, "127.0.0.1", 0) as server:
        html = FOREIGN_PAGE.replace("REVIEW", server.url).encode()

        class Page(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(html)))
                self.end_headers()
                self.wfile.write(html)

            def log_message(self, *args):
                pass

        foreign = http_server(Page, quiet=True)
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(foreign.url + "/")
        page.wait_for_function("() => document.title.startsWith('done ')")
        seen = page.title()
        assert '"json":"blocked"' in seen and '"iframe":"fetched"' in seen, seen
        # the iframe submits its form right after saying "fetched": wait for that request to reach the server
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while ("POST", "/targets", 403) not in answered:
            assert time.monotonic() < deadline, answered
            time.sleep(0.05)  # polls for the server's record of a request the page has sent (not a timed race)
        context.close()
    writes = sorted(a for a in answered if a[0] == "POST")
    assert writes == [
        ("POST", "/api/label", 403),
        ("POST", "/api/label", 403),
        ("POST", "/api/undo", 403),
        ("POST", "/targets", 403),
    ], answered  # the JSON one never left the browser (no preflight grant)
    assert store.labels("Foreign") == {4: "negative"}
    assert "Sandboxed target" not in {t.name for t in store.targets()}
