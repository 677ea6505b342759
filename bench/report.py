"""Turns ``bench/results/<date>-*.json`` into the summary table, the PNG plots and the results
block of ``bench/README.md`` (between its ``results:start`` / ``results:end`` markers).

The table has one row per target: what tickstream measured, whether the target is met, and
tickstream's figure divided by Nchan's and by the bare baseline's from the same run (for rates
higher is better; for latency, CPU and memory lower is better).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from ladder import KEPT_UP, P99_BOUND_MS, clean, highest_pass, passes

Row = dict[str, Any]
Line = list[str]  # target, measured, met, tickstream / Nchan, tickstream / baseline
START, END = "<!-- results:start -->", "<!-- results:end -->"
TWO_WORKERS = "tickstream-2w"
COLOURS = {
    "tickstream": "tab:blue",
    "nchan": "tab:green",
    "baseline": "tab:orange",
    TWO_WORKERS: "tab:purple",
}
CLIENT_WRITES = "tickstream_edge_client_writes_total"
LATENCY_TARGETS = {200: (2.0, 10.0), 1000: (None, 25.0)}  # clients: p50, p99 bounds (ms)
WRITE_US_TARGET = 12.0
FANOUT_VS_NCHAN = 2.0
KIB_TARGET = 16.0
SETUP_MS_TARGET = 0.3
MOST_CONNECTIONS = 19_900


def _load(results: Path, day: str, scenario: str) -> list[Row]:
    path = results / f"{day}-{scenario}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def _find(rows: list[Row], **match: Any) -> Row | None:
    """The first row whose fields equal ``match``."""
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _get(row: Row | None, key: str) -> Any:
    return None if row is None else row.get(key)


def _best(rows: list[Row], server: str, clients: int, p99_ms: float | None = None) -> Row | None:
    """The run of ``server`` at ``clients`` with the most delivered events/s (within ``p99_ms``
    and with nothing dropped, when given)."""
    chosen = [
        r for r in rows if r["server"] == server and r["clients"] == clients and "events_per_s" in r
    ]
    if p99_ms is not None:
        chosen = [r for r in chosen if 0 <= r["p99_ms"] <= p99_ms and clean(r)]
    return max(chosen, key=lambda r: r["events_per_s"], default=None)


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "n/a"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:g}{unit}"


def _server_label(server: str) -> str:
    return "tickstream, 2 edge workers" if server == TWO_WORKERS else server


def _latency_line(ours: Row, others: dict[str, Row | None], clients: int) -> Line:
    p50_max, p99_max = LATENCY_TARGETS[clients]
    bounds = (f"p50 <= {p50_max:g} ms, " if p50_max else "") + f"p99 <= {p99_max:g} ms"
    target = (
        f"latency, {_server_label(ours['server'])}: replay 1x, {clients:,} clients on 2 symbols, "
        f"{bounds} (goal <= 1.0x Nchan)"
    )
    if "unavailable" in ours:
        return [target, f"n/a ({ours['unavailable']})", "n/a", "n/a", "n/a"]
    met = ours["p99_ms"] <= p99_max and (p50_max is None or ours["p50_ms"] <= p50_max)
    nchan = others["nchan"]
    within = nchan is not None and all(ours[k] <= nchan[k] for k in ("p50_ms", "p99_ms"))
    measured = (
        f"p50 {ours['p50_ms']} ms, p99 {ours['p99_ms']} ms ({_fmt(ours['events_per_s'])} ev/s, "
        f"{ours['events_per_s'] / clients:.0f} per client{_caveats(ours)})"
    )
    ratios = [
        ", ".join(f"{k[:3]} {_ratio(ours[k], _get(o, k))}" for k in ("p50_ms", "p99_ms"))
        for o in (nchan, others["baseline"])
    ]
    return [target, measured, f"{_yes(met)}; <= Nchan: {_yes(within)}", *ratios]


def _caveats(row: Row) -> str:
    """What makes a latency run not like the others: clients that never connected, a window
    that opened later in the recording than planned (the clients were not ready in time)."""
    text = ""
    if row["connected"] < row["clients"]:
        text += f"; only {row['connected']:,} connected"
    position, lead = row.get("window_after_replay_start_s"), row.get("replay_lead_s")
    if position is not None and lead is not None and position > lead + 1:
        text += f"; window opened late, {position:g} s into the replay (planned {lead:g})"
    return text


def latency_lines(results: Path, day: str) -> list[Line]:
    """Replay 1x: 200 clients (p50 <= 2, p99 <= 10 ms), 1,000 (p99 <= 25 ms); 1 and 2 workers."""
    rows = _load(results, day, "latency")
    lines = []
    for server in ("tickstream", TWO_WORKERS):
        for clients in LATENCY_TARGETS:
            ours = _find(rows, server=server, clients=clients)
            if ours is None:
                continue
            others = {k: _find(rows, server=k, clients=clients) for k in ("nchan", "baseline")}
            others = {k: o if o and "unavailable" not in o else None for k, o in others.items()}
            lines.append(_latency_line(ours, others, clients))
    return lines


def light_load_lines(results: Path, day: str) -> list[Line]:
    """Scaling scenario: p99 at 100 and 1,000 clients no higher than the baseline's."""
    rows = _load(results, day, "scaling")
    lines = []
    for clients in (100, 1000):
        ours = _find(rows, server="tickstream", clients=clients)
        base = _find(rows, server="baseline", clients=clients)
        nchan = _find(rows, server="nchan", clients=clients)
        if ours is None:
            continue
        rate = ours["rate"]
        lines.append(
            [
                f"light load: p99 at {clients:,} clients x {rate:g} events/s <= the bare "
                "baseline's",
                f"p99 {ours['p99_ms']} ms (baseline {_get(base, 'p99_ms')} ms, "
                f"Nchan {_get(nchan, 'p99_ms')} ms)",
                _yes(base is not None and ours["p99_ms"] <= base["p99_ms"]),
                _ratio(ours["p99_ms"], _get(nchan, "p99_ms")),
                _ratio(ours["p99_ms"], _get(base, "p99_ms")),
            ]
        )
    return lines


def _saturation(rows: list[Row]) -> dict[str, Row]:
    return {r["server"]: r for r in rows if r.get("saturation") and "events_per_s" in r}


def write_cost_lines(results: Path, day: str) -> list[Line]:
    """Edge CPU per client write at saturation (1,000 clients x 340 events/s offered); Nchan's
    and the baseline's CPU per delivered event (one write each there)."""
    top = _saturation(_load(results, day, "fanout"))
    ours = top.get("tickstream")
    if ours is None:
        return []
    per_write, counter = ours.get("own_us_per_write"), ours.get("writes_counter")
    if counter == CLIENT_WRITES:
        measured, met = (
            f"{_fmt(per_write)} us edge CPU per client write",
            _yes(per_write is not None and per_write <= WRITE_US_TARGET),
        )
    else:  # events sent count more than writes (a write carries all a client has queued)
        measured = (
            f"n/a: the edge has no {CLIENT_WRITES} yet; per event sent ({counter}): "
            f"{_fmt(per_write)} us"
            if counter
            else "n/a: the edge's /metrics did not answer"
        )
        met = "n/a"
    measured += (
        f"; {ours['own_us_per_event']} us per delivered event; {_fmt(ours['events_per_s'])} "
        f"ev/s, edge CPU {ours['own_cpu']}"
    )
    ratios = [
        f"{_ratio(per_write, _get(top.get(k), 'own_us_per_event'))} "
        f"({k}: {_get(top.get(k), 'own_us_per_event')} us CPU per delivered event)"
        for k in ("nchan", "baseline")
    ]
    target = f"cost per client write <= {WRITE_US_TARGET:g} us of edge CPU at saturation"
    return [[target, measured, met, *ratios]]


def _steps(rows: list[Row]) -> str:
    """Each step tried: rate per client, p99, pass or fail."""
    ordered = sorted((r for r in rows if "events_per_s" in r), key=lambda r: r["rate"])
    return ", ".join(
        f"{r['rate']:g}/s p99 {r['p99_ms']} ms {'pass' if passes(r) else 'fail'}" for r in ordered
    )


def _fanout_line(server: str, rows: list[Row], best: dict[str, Row | None]) -> Line:
    ours = [r for r in rows if r["server"] == server]
    target = (
        f"fan-out, {_server_label(server)}: 1,000 clients, highest offered rate with p99 <= "
        f"{P99_BOUND_MS:g} ms, nothing dropped and >= {KEPT_UP:.0%} delivered, >= "
        f"{FANOUT_VS_NCHAN:g}x Nchan's"
    )
    gone = next((r["unavailable"] for r in ours if "unavailable" in r), None)
    if gone:
        return [target, f"n/a ({gone})", "n/a", "n/a", "n/a"]
    top, nchan, base = best[server], best["nchan"], best["baseline"]
    rate = _get(top, "offered_per_s")
    measured = f"{_fmt(rate)} ev/s offered" if top else "no step passed"
    measured += f" (steps: {_steps(ours)})"
    theirs = {"Nchan": _get(nchan, "offered_per_s"), "baseline": _get(base, "offered_per_s")}
    met = rate is not None and theirs["Nchan"] is not None
    met = met and rate >= FANOUT_VS_NCHAN * theirs["Nchan"]
    ratios = [f"{_ratio(rate, value)} ({name} {_fmt(value)})" for name, value in theirs.items()]
    return [target, measured, _yes(met), *ratios]


def fanout_lines(results: Path, day: str) -> list[Line]:
    rows = [r for r in _load(results, day, "fanout") if r["clients"] == 1000]
    servers = {r["server"] for r in rows}
    best = {s: highest_pass([r for r in rows if r["server"] == s]) for s in COLOURS}
    return [_fanout_line(s, rows, best) for s in ("tickstream", TWO_WORKERS) if s in servers]


def _held(row: Row) -> str:
    return "" if row["held"] >= row["connections"] else f" (only {row['held']:,} held)"


def memory_lines(results: Path, day: str) -> list[Line]:
    """Per idle connection at 10,000: RSS and set-up CPU; 19,900 connected within 20 s."""
    rows = _load(results, day, "memory")
    at = {r["server"]: r for r in rows if r["connections"] == 10_000}
    most = {r["server"]: r for r in rows if r["connections"] == MOST_CONNECTIONS}
    lines = []
    kib, setup = "kib_per_connection", "setup_cpu_ms_per_connection"
    ours = at.get("tickstream")
    if ours is not None:
        whole = ours["held"] >= ours["connections"]
        lines.append(
            [
                f"<= {KIB_TARGET:g} KiB RSS per idle SSE connection at 10,000",
                f"{ours[kib]} KiB{_held(ours)}",
                _yes(whole and ours[kib] <= KIB_TARGET),
                *(_ratio(ours[kib], _get(at.get(k), kib)) for k in ("nchan", "baseline")),
            ]
        )
    if ours is not None and ours.get(setup) is not None:
        lines.append(
            [
                f"stream set-up CPU <= {SETUP_MS_TARGET:g} ms per connection (edge CPU while "
                "10,000 idle streams connect / streams connected)",
                f"{ours[setup]} ms{_held(ours)}",
                _yes(ours[setup] <= SETUP_MS_TARGET),
                *(_ratio(ours[setup], _get(at.get(k), setup)) for k in ("nchan", "baseline")),
            ]
        )
    if "tickstream" in most:
        lines.append(_connections_line(most))
    return lines


def _connections_line(most: dict[str, Row]) -> Line:
    ours = most["tickstream"]
    window = ours.get("connect_window_s", 40)
    within = ours.get("connected_in_window", ours["held"])  # older runs: held at the end
    whole = within >= ours["connections"] and not ours["closed_early"]
    measured = (
        f"{within:,} of {ours['connections']:,} connected within {window} s "
        f"(took {ours.get('connect_s', 'n/a')} s), {ours['held']:,} held by the end, "
        f"{ours['closed_early']} dropped (20,000 cannot fit under this machine's open-files "
        "limit of 20,000 per process)"
    )
    ratios = []
    for name in ("nchan", "baseline"):
        theirs = most.get(name, {})
        count = theirs.get("connected_in_window", theirs.get("held"))
        ratios.append(f"{_ratio(within, count)} ({name}: {count} within {window} s)")
    target = f"all {MOST_CONNECTIONS:,} connections connected within 20 s and held (heartbeats)"
    return [target, measured, _yes(whole and window <= 20), *ratios]


def earlier_lines(results: Path, day: str) -> list[Line]:
    """Targets of earlier issues still measured here: fan-out rates (1,000 clients at the
    saturation step, 100 clients), latency at 100,000 events/s offered, the feed alone."""
    fanout = _load(results, day, "fanout")
    lines: list[Line] = []
    for clients, target in ((1000, 340_000), (100, 400_000)):
        best = {s: _best(fanout, s, clients) for s in ("tickstream", "nchan", "baseline")}
        ours = best["tickstream"]
        if ours is None:
            continue
        value = ours["events_per_s"]
        lines.append(
            [
                f"fan-out {clients:,} clients >= {target:,} ev/s delivered (earlier target)",
                f"max {_fmt(value)} ev/s (p99 {ours['p99_ms']} ms)",
                _yes(value >= target),
                _ratio(value, _get(best["nchan"], "events_per_s")),
                _ratio(value, _get(best["baseline"], "events_per_s")),
            ]
        )
    step = {r["server"]: r for r in fanout if r["clients"] == 1000 and r.get("rate") == 100}
    if "events_per_s" in step.get("tickstream", {}):
        ours = step["tickstream"]
        lines.append(
            [
                "p50 / p99 at 100,000 ev/s offered, 1,000 clients (the targets quote Nchan at "
                "4 / 8 ms)",
                f"{ours['p50_ms']} / {ours['p99_ms']} ms at {_fmt(ours['events_per_s'])} ev/s",
                "n/a",
                *(
                    _ratio(ours["p99_ms"], _get(step.get(k), "p99_ms")) + " p99"
                    for k in ("nchan", "baseline")
                ),
            ]
        )
    for row in _load(results, day, "feed"):
        lines.append(
            [
                ">= 500,000 ticks/s to one gRPC subscriber",
                f"{_fmt(row['ticks_per_s'])} ticks/s ({row['ticks_per_message']} ticks/message)",
                _yes(row["ticks_per_s"] >= 500_000),
                "n/a",
                "n/a",
            ]
        )
    return lines


def feed_cpu_lines(results: Path, day: str) -> list[Line]:
    """The feed's CPU at a fixed tick rate does not grow with SSE clients (scaling scenario)."""
    scaling = [r for r in _load(results, day, "scaling") if r["server"] == "tickstream"]
    feed_cpu = [(r["clients"], r.get("feed_cpu")) for r in scaling if r.get("feed_cpu") is not None]
    if not feed_cpu:
        return []
    flat = max(v for _, v in feed_cpu) <= 2 * max(min(v for _, v in feed_cpu), 0.01)
    return [
        [
            "feed CPU per tick does not grow with SSE clients (it grows with edges only)",
            f"feed CPU share at {scaling[0]['rate']} ticks/s: "
            + ", ".join(f"{c:,} clients {100 * v:.1f}%" for c, v in feed_cpu),
            _yes(flat),
            "n/a",
            "n/a",
        ]
    ]


def summary_rows(results: Path, day: str) -> list[Line]:
    """[target, measured, met?, tickstream/Nchan, tickstream/baseline] rows: issue 11's targets
    first, then earlier ones."""
    return [
        *latency_lines(results, day),
        *light_load_lines(results, day),
        *write_cost_lines(results, day),
        *fanout_lines(results, day),
        *memory_lines(results, day),
        *earlier_lines(results, day),
        *publish_rows(results, day),
        *feed_cpu_lines(results, day),
    ]


def notes(results: Path, day: str) -> list[str]:
    """How the latency windows lined up, and how the fan-out steps were judged."""
    latency = [r for r in _load(results, day, "latency") if "window_after_replay_start_s" in r]
    lines = []
    if latency:
        spans = "; ".join(
            f"{_server_label(r['server'])} {r['clients']:,} clients from "
            f"{r['window_after_replay_start_s']:g} s for {r['seconds']:g} s"
            for r in latency
        )
        lines.append(
            "Latency: every server replays the bundled recording at 1x from its first tick (the "
            "feed's replay source; `replay_ticks.py` for Nchan and the baseline: same ticks, same "
            f"pacing, the edge's event bytes); the windows, counted from each replay's start: "
            f"{spans}."
        )
    if _load(results, day, "fanout"):
        lines.append(
            f"Fan-out: a step passes when every client connected, p99 <= {P99_BOUND_MS:g} ms, no "
            f"id or sequence gap, no disconnect, and at least {KEPT_UP:.0%} of the offered events "
            "arrived; each server climbs its own ladder of steps and bisects (`ladder.py`)."
        )
    return lines


def publish_rows(results: Path, day: str) -> list[list[str]]:
    """Rows of the publish scenario (``publish.py``): end to end, pinned, as fast as the
    producer can; and the 20 s flood."""
    rows = []
    for row in _load(results, day, "publish"):
        if row["scenario"] == "e2e" and row["pinned"] and not row["profiled"]:
            if row.get("paced_at"):
                continue
            sse = row["sse"]
            rows.append(
                [
                    ">= 200,000 ticks/s from one producer (batches of 100) end to end to one "
                    "SSE client",
                    f"{_fmt(row['ticks_per_s'])} ticks/s delivered "
                    f"({_fmt(row['acked_ticks_per_s'])} acknowledged), p99 "
                    + (f"{sse['p99_ms']} ms" if sse["p99_ms"] >= 0 else "n/a (no events)"),
                    "yes" if row["ticks_per_s"] >= 200_000 and row.get("whole") else "no",
                    "n/a",
                    "n/a",
                ]
            )
        elif row["scenario"] == "flood":
            rows.append(
                [
                    f"{row['seconds']} s flood from one producer: feed RSS bounded, the "
                    "producer slowed, not failed",
                    f"RSS {row['rss_min_mib']}-{row['rss_max_mib']} MiB, bounded: "
                    f"{row['bounded']}; {_fmt(row['ticks_per_s'])} ticks/s acknowledged, "
                    f"status {'/'.join(row['statuses'])}",
                    "yes" if row["bounded"] and row["slowed_not_failed"] else "no",
                    "n/a",
                    "n/a",
                ]
            )
    return rows


def _measured_rows(rows: list[Row], server: str, **match: Any) -> list[Row]:
    return [
        r
        for r in rows
        if r["server"] == server
        and "events_per_s" in r
        and all(r.get(k) == v for k, v in match.items())
    ]


def plot_fanout(results: Path, day: str) -> Path | None:
    fanout = _load(results, day, "fanout")
    if not fanout:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, clients in zip(axes, (1000, 100), strict=True):
        top = 0.0
        for server, colour in COLOURS.items():
            rows = sorted(
                _measured_rows(fanout, server, clients=clients), key=lambda r: r["offered_per_s"]
            )
            if rows:
                xs = [r["offered_per_s"] / 1000 for r in rows]
                ys = [r["events_per_s"] / 1000 for r in rows]
                ax.plot(xs, ys, "o-", c=colour, label=_server_label(server))
                top = max(top, *xs)
        ax.plot([0, top], [0, top], ":", c="grey", label="offered")
        ax.set(title=f"{clients:,} clients", xlabel="offered (k events/s)")
        ax.set_ylabel("delivered (k events/s)")
        ax.legend()
    fig.tight_layout()
    return _save(fig, results / f"{day}-fanout.png")


def plot_scaling(results: Path, day: str) -> Path | None:
    scaling = _load(results, day, "scaling")
    if not scaling:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for server, colour in COLOURS.items():
        rows = sorted(_measured_rows(scaling, server), key=lambda r: r["clients"])
        if rows:
            xs = [r["clients"] for r in rows]
            axes[0].plot(xs, [r["events_per_s"] for r in rows], "o-", c=colour, label=server)
            p99 = [max(r["p99_ms"], 0.01) for r in rows]
            axes[1].plot(xs, p99, "o-", c=colour, label=server)
    rate = scaling[0]["rate"]
    axes[0].set(xscale="log", yscale="log", xlabel="clients", ylabel="delivered events/s")
    axes[0].set_title(f"delivered vs clients ({rate} events/s each)")
    axes[1].set(xscale="log", yscale="log", xlabel="clients", ylabel="p99 latency (ms)")
    axes[1].set_title("p99 feed ingest -> client vs clients")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    return _save(fig, results / f"{day}-scaling.png")


def plot_memory(results: Path, day: str) -> Path | None:
    memory = _load(results, day, "memory")
    if not memory:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for server, colour in COLOURS.items():
        rows = sorted((r for r in memory if r["server"] == server), key=lambda r: r["connections"])
        if rows:
            held = [r["held"] for r in rows]  # what the server held, not what was asked
            ax.plot(held, [r["rss_kib"] / 1024 for r in rows], "o-", c=colour, label=server)
    ax.set(
        xlabel="open idle SSE connections", ylabel="server RSS (MiB)", title="RSS vs connections"
    )
    ax.legend()
    fig.tight_layout()
    return _save(fig, results / f"{day}-memory.png")


def plot(results: Path, day: str) -> list[Path]:
    made = (make(results, day) for make in (plot_fanout, plot_scaling, plot_memory))
    return [path for path in made if path is not None]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(results: Path, day: str, info: dict[str, Any], readme: bool = True) -> Path:
    """Write ``<day>-summary.md`` and the plots; refresh bench/README.md's results block
    (unless ``readme`` is false)."""
    rows = summary_rows(results, day)
    plots = plot(results, day)
    lines = [
        f"Run of {day} on {info['cpu']} ({info['cpus']} CPUs, Linux {info['kernel']}, "
        f"Python {info['python']}); {info['pinning']}.",
        "",
        "| target | tickstream measured | met | tickstream / Nchan | tickstream / baseline |",
        # ratios of events/s: higher is better; of latency, CPU or KiB: lower is better
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *notes(results, day),
        "",
        *(f"![{p.stem}](results/{p.name})" for p in plots),
        "",
        f"Raw figures: `bench/results/{day}-*.json`; edge profile at saturation: "
        f"`bench/results/{day}-edge-profile.svg` (flame graph) and `.txt` (collapsed stacks).",
    ]
    summary = results / f"{day}-summary.md"
    summary.write_text("\n".join(lines).replace("](results/", "](") + "\n")
    path = Path(__file__).resolve().parent / "README.md"
    if readme and path.exists():
        text = path.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            path.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)
    return summary
