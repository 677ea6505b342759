"""Run inside a fresh network namespace (``unshare -n``, as root): Debian's chromium, driven by
Playwright, watches the live page while the feed and then the edge restart. Exits 0 on success and
prints what it saw; screenshots go to ``tests/artifacts/``.

Only loopback exists in the namespace, so neither chromium's own lookups nor anything else can
leave the machine. The feed replays the bundled real Binance recordings at their recorded pace, in
a loop. What is checked, in order:

1. real BTCUSDT trade prices (present in the recording) appear with bid, ask, exact spread, a
   sparkline, ticks per second and a latency; the state reads ``live``;
2. the symbol picker reopens the ONE EventSource on a new symbol set, with no resume cursor;
3. feed restart with the stream open: the page shows the feed down, gets a ``reset`` with the new
   epoch, returns to ``live`` and shows the new epoch's trades, without a reload;
4. feed down while the page opens a new stream (symbol change): 503 closes the EventSource, the
   page reopens with backoff and goes live once a new feed is up;
5. edge restart on the same port: the EventSource resumes by Last-Event-ID, no reset, same epoch.
6. a stale source (issue 10): a feed on a local exchange server (``--source binance``) that pauses;
   the page marks BTCUSDT stale within the stale time and clears the mark when ticks return.

At no moment are two EventSources open.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.exchange_server import ExchangeServer, recorded_messages, recorded_snapshots
from tests.support import (
    BTC_FILE,
    ETH_FILE,
    ROOT,
    ServiceProcess,
    replay_args,
    start_edge,
    start_feed,
)

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # required as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
WAIT_MS = 30_000
STREAM = "/sse?snapshot=true&types=trade,quote,book,bar&intervals=1m&depth=10&max_rate=4&symbols="
"""The page's one stream, before its symbols."""
PRICE = re.compile(r"^[0-9]+\.[0-9]{8}$")

# Counts EventSources (and how many are open at once) and records the page's states, before any
# page script runs.
PROBE = """
(() => {
  const Native = window.EventSource;
  const sources = [];
  const probe = window.__probe = {
    created: 0, maxOpen: 0, states: [], resets: [], trades: 0, lastTradeId: "",
  };
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      sources.push(this);
      probe.created++;
      const open = sources.filter(s => s.readyState !== Native.CLOSED).length;
      probe.maxOpen = Math.max(probe.maxOpen, open);
      this.addEventListener("trade", e => { probe.trades++; probe.lastTradeId = e.lastEventId; });
      this.addEventListener("reset", e => probe.resets.push(e.lastEventId + " " + e.data));
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const el = document.getElementById("state");
    new MutationObserver(() => {
      const name = el.dataset.state;
      if (probe.states[probe.states.length - 1] !== name) probe.states.push(name);
    }).observe(el, { attributes: true, attributeFilter: ["data-state"] });
  });
})();
"""

ROW_JS = """sym => {
  const tr = document.querySelector(`#rows tr[data-symbol="${sym}"]`);
  if (!tr) return null;
  const get = f => tr.querySelector(`td[data-field="${f}"]`);
  const spark = get("spark").querySelector("svg");
  return {
    last: get("last").dataset.value || null, lastText: get("last").textContent,
    size: get("size").dataset.value || null,
    bid: get("bid").dataset.value || null, ask: get("ask").dataset.value || null,
    spread: get("spread").dataset.value || null,
    rate: Number(get("rate").dataset.value || 0),
    latency: get("latency").dataset.value === "" || get("latency").dataset.value === undefined
      ? null : Number(get("latency").dataset.value),
    sparkPoints: Number(spark.dataset.points), polyline: spark.querySelector("polyline")
      .getAttribute("points"),
  };
}"""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def recorded_btc_trade_prices() -> set[str]:
    prices = set()
    with gzip.open(BTC_FILE, "rt") as lines:
        for line in lines:
            message = json.loads(line.partition(" ")[2])
            if message.get("stream", "").endswith("@trade"):
                prices.add(message["data"]["p"])
    return prices


def recorded_btc_book_prices() -> set[str]:
    """Every price level of BTCUSDT's recorded depth snapshot and diffs."""
    prices = set()
    with gzip.open(BTC_FILE, "rt") as lines:
        for line in lines:
            message = json.loads(line.partition(" ")[2])
            if "lastUpdateId" in message:
                levels = message["bids"] + message["asks"]
            elif "@depth" in message.get("stream", ""):
                levels = message["data"]["b"] + message["data"]["a"]
            else:
                continue
            prices.update(price for price, _ in levels)
    return prices


DETAIL_JS = """() => {
  const ladder = document.getElementById("ladder"), tape = document.getElementById("tape");
  const chart = document.getElementById("chart");
  return {
    symbol: document.getElementById("detail-symbol").textContent,
    candles: Number(chart.dataset.candles), canvases: chart.querySelectorAll("canvas").length,
    library: typeof window.LightweightCharts,
    bestBid: ladder.dataset.bestBid || null, bestAsk: ladder.dataset.bestAsk || null,
    updates: Number(ladder.dataset.updates || 0),
    levels: [...ladder.querySelectorAll("tr.bid td:first-child, tr.ask td:first-child")]
      .map(td => td.dataset.value),
    bars: [...ladder.querySelectorAll("span.bar")].map(s => parseFloat(s.style.width)),
    trades: Number(tape.dataset.trades || 0),
    tape: [...tape.querySelectorAll("li span:nth-child(2)")].map(s => s.dataset.value),
  };
}"""


def check_detail(page: Page, trade_prices: set[str], book_prices: set[str]) -> str:
    """The detail panel of BTCUSDT: candles drawn, a ladder of recorded levels that updates, a
    tape of recorded trades. What it saw, as one line."""
    page.wait_for_function(
        """() => Number(document.getElementById("chart").dataset.candles) >= 1
             && document.getElementById("ladder").dataset.bestBid
             && Number(document.getElementById("tape").dataset.trades) >= 3""",
        timeout=WAIT_MS,
    )
    first = page.evaluate(DETAIL_JS)
    assert first["symbol"] == "BTCUSDT" and first["library"] == "object", first
    assert first["canvases"] >= 1, "the chart draws on canvases"
    assert Decimal(first["bestBid"]) < Decimal(first["bestAsk"]), first
    assert len(first["levels"]) == 20 and set(first["levels"]) <= book_prices, first
    assert max(first["bars"]) == 100.0 and min(first["bars"]) >= 0, "size bars, widest full"
    assert first["tape"] and set(first["tape"]) <= trade_prices, first
    page.wait_for_function(
        "n => Number(document.getElementById('ladder').dataset.updates) > n",
        arg=first["updates"] + 5,
        timeout=WAIT_MS,
    )
    later = page.evaluate(DETAIL_JS)
    assert set(later["levels"]) <= book_prices
    return (
        f"detail BTCUSDT: {later['candles']} candles, ladder best {later['bestBid']} / "
        f"{later['bestAsk']} after {later['updates']} book updates, tape {later['trades']} "
        f"trades (prices and levels in the recording)"
    )


def probe(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("() => ({...window.__probe})")
    return result


def row(page: Page, symbol: str) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(ROW_JS, symbol)
    return result


def state(page: Page) -> str:
    return str(page.get_attribute("#state", "data-state"))


def wait_for(
    page: Page, script: str, *, what: str, arg: Any = None, timeout: int = WAIT_MS
) -> None:
    """``page.wait_for_function``; on a timeout, fails saying what the page showed then."""
    try:
        page.wait_for_function(script, arg=arg, timeout=timeout)
    except PlaywrightTimeout:
        seen = {
            "state": state(page),
            "stateText": page.text_content("#state"),
            "probe": probe(page),
            "BTCUSDT": row(page, "BTCUSDT"),
            "log": page.evaluate("() => document.getElementById('log')?.innerText.slice(-1500)"),
        }
        raise AssertionError(
            f"waited {timeout / 1000:.0f} s for {what}; the page: {seen}"
        ) from None


def wait_live_trades(page: Page, epoch_prefix: str, after_offset: int = -1) -> None:
    """Until the page is live, its EventSource got a trade of ``epoch_prefix`` past
    ``after_offset``, and the BTCUSDT row shows a trade and a live rate."""
    wait_for(
        page,
        """([prefix, after]) => {
          const p = window.__probe, id = p.lastTradeId;
          const tr = document.querySelector('#rows tr[data-symbol="BTCUSDT"]');
          return document.getElementById("state").dataset.state === "live"
            && id.startsWith(prefix) && Number(id.split("-").pop()) > after
            && tr && Number(tr.querySelector('td[data-field="rate"]').dataset.value || 0) > 0
            && tr.querySelector('td[data-field="last"]').dataset.value;
        }""",
        arg=[epoch_prefix, after_offset],
        timeout=WAIT_MS,
        what=f"live trades of epoch {epoch_prefix}",
    )


def wait_state(page: Page, name: str, timeout: int = WAIT_MS) -> None:
    wait_for(
        page,
        "name => document.getElementById('state').dataset.state === name",
        arg=name,
        timeout=timeout,
        what=f"the state {name!r}",
    )


def edge_epoch(edge: ServiceProcess) -> str:
    body = httpx.get(f"http://127.0.0.1:{edge.port}/symbols", timeout=5).json()
    return str(body["epoch"])


def wait_edge_epoch(edge: ServiceProcess, old: str, within: float = 30) -> str:
    """The feed's epoch as the edge reports it, once it differs from ``old``."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            epoch = edge_epoch(edge)
            if epoch != old:
                return epoch
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError("the edge never reported a new epoch")


def check_btc_row(page: Page, prices: set[str], within: float = 20) -> dict[str, Any]:
    """Check the BTCUSDT row, once its sparkline has two trades (right after a reset or a new
    epoch it may hold one)."""
    deadline = time.monotonic() + within
    btc = row(page, "BTCUSDT")
    while btc["sparkPoints"] < 2 and time.monotonic() < deadline:
        time.sleep(0.25)
        btc = row(page, "BTCUSDT")
    assert btc["last"] and PRICE.match(btc["last"]), btc
    assert btc["last"] in prices, f"{btc['last']} is not a BTCUSDT trade price of the recording"
    assert btc["last"].startswith(btc["lastText"]), "shown without trailing zeros"
    assert btc["size"] and Decimal(btc["size"]) > 0, btc
    bid, ask = Decimal(btc["bid"]), Decimal(btc["ask"])
    assert 0 < bid <= ask, btc
    assert Decimal(btc["spread"]) == ask - bid, "the spread is exact"
    assert btc["sparkPoints"] >= 2 and len(btc["polyline"].split()) == btc["sparkPoints"], btc
    assert btc["rate"] > 0, btc
    assert btc["latency"] is not None and 0 <= btc["latency"] < 5000, btc
    return btc


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


def run(page: Page, prices: set[str], book_prices: set[str]) -> None:
    feed_args = [*replay_args(BTC_FILE, ETH_FILE, speed="1", loop=True), "--bar-intervals", "1m"]
    feed = start_feed(*feed_args)
    edge = start_edge(feed.port)
    try:
        base = f"http://127.0.0.1:{edge.port}"
        epoch = edge_epoch(edge)

        # 1. Real prices appear.
        started = time.monotonic()
        page.goto(base + "/")
        wait_live_trades(page, epoch + "-")
        page.wait_for_function(
            """() => document.querySelector('#rows tr[data-symbol="BTCUSDT"] svg')
                 .dataset.points >= 2""",
            timeout=WAIT_MS,
        )
        btc = check_btc_row(page, prices)
        assert page.text_content("#epoch") == f"epoch {epoch}"
        print(
            f"first BTCUSDT trade {btc['last']} (in the recording) after "
            f"{time.monotonic() - started:.1f}s; bid {btc['bid']} ask {btc['ask']} spread "
            f"{btc['spread']}; {btc['rate']} ticks/s; median latency {btc['latency']:.0f} ms; "
            f"sparkline {btc['sparkPoints']} points"
        )
        screenshot(page, "page-1-live.png")
        print(check_detail(page, prices, book_prices))

        # 2. The picker reopens the one EventSource on another symbol set, without a cursor.
        created = probe(page)["created"]
        page.uncheck('#picker input[data-symbol="ETHUSDT"]')
        page.wait_for_function(
            """url => !document.querySelector('#rows tr[data-symbol="ETHUSDT"]')
                 && document.getElementById('stream-url').textContent
                    === url""",
            arg=STREAM + "BTCUSDT",
            timeout=WAIT_MS,
        )
        wait_live_trades(page, epoch + "-")
        page.check('#picker input[data-symbol="ETHUSDT"]')
        page.wait_for_function(
            """url => document.querySelectorAll('#rows tr').length === 2
                 && document.getElementById('stream-url').textContent
                    === url""",
            arg=STREAM + "BTCUSDT%2CETHUSDT",
            timeout=WAIT_MS,
        )
        wait_live_trades(page, epoch + "-")
        assert probe(page)["created"] == created + 2, probe(page)
        print("picker: ETHUSDT off and on, the stream reopened fresh each time")

        # 3. Feed restart on the same port while the stream stays open: feed down, reset, live.
        resets = int(page.text_content("#resets") or 0)
        states_before = len(probe(page)["states"])
        feed.stop()
        stopped = time.monotonic()
        wait_state(page, "feed-down")
        print(f"feed stopped: page shows feed-down after {time.monotonic() - stopped:.1f}s")
        feed = start_feed(*feed_args, port=feed.port)
        new_epoch = wait_edge_epoch(edge, epoch)
        wait_live_trades(page, new_epoch + "-")
        states = probe(page)["states"][states_before:]
        assert "reset" in states, states
        assert int(page.text_content("#resets") or 0) == resets + 1
        assert page.text_content("#epoch") == f"epoch {new_epoch}"
        check_btc_row(page, prices)
        print(
            f"feed restart: states {' -> '.join(states)}; live with epoch {new_epoch} trades "
            f"{time.monotonic() - stopped:.1f}s after the stop, no reload"
        )
        screenshot(page, "page-3-after-feed-restart.png")
        epoch = new_epoch

        # 4. Feed down while the page opens a new stream: 503, reopen with backoff, live.
        feed.stop()
        stopped = time.monotonic()
        httpx_deadline = time.monotonic() + 10
        while httpx.get(f"{base}/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < httpx_deadline, "the edge never noticed the feed stop"
            time.sleep(0.1)
        created = probe(page)["created"]
        page.uncheck('#picker input[data-symbol="ETHUSDT"]')
        page.wait_for_function("n => window.__probe.created >= n + 2", arg=created, timeout=WAIT_MS)
        assert state(page) == "reconnecting", state(page)
        feed = start_feed(*feed_args, port=feed.port)
        new_epoch = wait_edge_epoch(edge, epoch)
        wait_live_trades(page, new_epoch + "-")
        attempts = probe(page)["created"] - created
        assert page.query_selector('#rows tr[data-symbol="ETHUSDT"]') is None
        assert page.text_content("#epoch") == f"epoch {new_epoch}"
        check_btc_row(page, prices)
        print(
            f"feed down during a symbol change: {attempts} EventSource opens (503 then backoff); "
            f"live with epoch {new_epoch} {time.monotonic() - stopped:.1f}s after the stop; "
            f"last note: {page.text_content('#log')}"
        )
        epoch = new_epoch
        page.check('#picker input[data-symbol="ETHUSDT"]')
        page.wait_for_function(
            "() => document.querySelectorAll('#rows tr').length === 2", timeout=WAIT_MS
        )
        wait_live_trades(page, epoch + "-")

        # 5. Edge restart on the same port: the EventSource resumes by Last-Event-ID.
        resets = int(page.text_content("#resets") or 0)
        states_before = len(probe(page)["states"])
        last_offset = int(probe(page)["lastTradeId"].rsplit("-", 1)[1])
        edge_port = edge.port
        edge.stop()
        stopped = time.monotonic()
        edge = start_edge(feed.port, "--port", str(edge_port))
        assert edge.port == edge_port
        wait_live_trades(page, epoch + "-", after_offset=last_offset)
        states = probe(page)["states"][states_before:]
        assert "reconnecting" in states, states
        assert int(page.text_content("#resets") or 0) == resets, "resumed without a reset"
        assert page.text_content("#epoch") == f"epoch {epoch}"
        btc = check_btc_row(page, prices)
        print(
            f"edge restart: states {' -> '.join(states)}; resumed in epoch {epoch} without reset "
            f"{time.monotonic() - stopped:.1f}s after the stop; BTCUSDT {btc['last']}"
        )
        time.sleep(2)  # a fuller sparkline for the picture
        check_btc_row(page, prices)
        screenshot(page, "page.png")

        final = probe(page)
        assert final["maxOpen"] == 1, final
        reasons = [json.loads(text.partition(" ")[2])["reason"] for text in final["resets"]]
        print(
            f"EventSources created {final['created']}, never more than {final['maxOpen']} open; "
            f"{final['trades']} trade events; resets {reasons}; "
            f"states {' -> '.join(final['states'])}"
        )
    finally:
        edge.stop()
        feed.stop()


STALE_JS = """sym => document.querySelector(`#rows tr[data-symbol="${sym}"]`)?.dataset.stale"""


def run_stale(page: Page) -> None:
    """A paused exchange: the BTCUSDT row is marked stale, then cleared when ticks return."""
    messages, snapshots = recorded_messages([BTC_FILE], 20_000), recorded_snapshots([BTC_FILE])
    with ExchangeServer(messages, rate=100, snapshots=snapshots) as exchange:
        feed = start_feed(
            "--source", "binance", "--symbols", "BTCUSDT", "--binance-url", exchange.url,
            "--binance-rest-url", exchange.rest_url, "--stale-after", "1.5",
        )  # fmt: skip
        edge = start_edge(feed.port)
        try:
            page.goto(f"http://127.0.0.1:{edge.port}/#symbols=BTCUSDT")
            page.wait_for_function(
                "() => document.querySelector('#rows td[data-field=last]')?.dataset.value",
                timeout=WAIT_MS,
            )
            assert page.evaluate(STALE_JS, "BTCUSDT") == "false"
            exchange.pause()
            paused = time.monotonic()
            page.wait_for_function(f"() => ({STALE_JS})('BTCUSDT') === 'true'", timeout=WAIT_MS)
            marked = time.monotonic() - paused
            screenshot(page, "page-stale.png")
            exchange.resume()
            resumed = time.monotonic()
            page.wait_for_function(f"() => ({STALE_JS})('BTCUSDT') === 'false'", timeout=WAIT_MS)
            print(
                f"stale: BTCUSDT marked stale {marked:.1f} s after the exchange paused "
                f"(stale time 1.5 s), cleared {time.monotonic() - resumed:.1f} s after it resumed"
            )
        finally:
            edge.stop()
            feed.stop()


def main() -> int:
    ip("link", "set", "lo", "up")
    prices = recorded_btc_trade_prices()
    book_prices = recorded_btc_book_prices()
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 820},
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.add_init_script(PROBE)
            run(page, prices, book_prices)
            stale_page = browser.new_page()
            stale_page.on("pageerror", lambda error: errors.append(str(error)))
            run_stale(stale_page)
        finally:
            browser.close()
    assert not errors, f"script errors on the page: {errors}"
    print("browser page test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
