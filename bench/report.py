"""Turns ``bench/results/<date>-*.json`` into the summary table, the PNG plots and the results
block of ``bench/README.md`` (between its ``results:start`` / ``results:end`` markers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

Row = dict[str, Any]
START, END = "<!-- results:start -->", "<!-- results:end -->"
COLOURS = {"tickstream": "tab:blue", "nchan": "tab:green", "baseline": "tab:orange"}


def _load(results: Path, day: str, scenario: str) -> list[Row]:
    path = results / f"{day}-{scenario}.json"
    return json.loads(path.read_text())["runs"] if path.exists() else []


def _clean(row: Row) -> bool:
    """Nothing dropped: no id gap or repeat, no disconnect, every client served."""
    return not (
        row.get("id_gaps")
        or row.get("id_repeats")
        or row.get("disconnect_events")
        or row.get("closed_early")
        or row.get("never_answered")
    )


def _best(rows: list[Row], server: str, clients: int, p99_ms: float | None = None) -> Row | None:
    """The run of ``server`` at ``clients`` with the most delivered events/s (within ``p99_ms``
    and with nothing dropped, when given)."""
    chosen = [r for r in rows if r["server"] == server and r["clients"] == clients]
    if p99_ms is not None:
        chosen = [r for r in chosen if 0 <= r["p99_ms"] <= p99_ms and _clean(r)]
    return max(chosen, key=lambda r: r["events_per_s"], default=None)


def _ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "n/a"


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:g}{unit}"


def summary_rows(results: Path, day: str) -> list[list[str]]:
    """[target, measured, met?, tickstream/Nchan, tickstream/baseline] rows."""
    fanout = _load(results, day, "fanout")
    rows: list[list[str]] = []
    # The targets: 1,000 clients with p99 <= 50 ms and nothing dropped; 100 clients, rate only.
    for clients, target, p99_bound in ((1000, 340_000, 50.0), (100, 400_000, None)):
        best = {s: _best(fanout, s, clients) for s in COLOURS}
        clean = _best(fanout, "tickstream", clients, p99_ms=p99_bound or 1e12)
        ours = best["tickstream"]
        if ours is None:
            continue
        value = ours["events_per_s"]
        condition = f", p99 <= {p99_bound:g} ms" if p99_bound else ""
        measured = (
            f"max {_fmt(value)} ev/s (p99 {ours['p99_ms']} ms); with nothing dropped"
            f"{condition}: {_fmt(clean['events_per_s'] if clean else None)} ev/s"
        )
        nchan, base = best["nchan"], best["baseline"]
        rows.append(
            [
                f"fan-out {clients:,} clients >= {target:,} ev/s{condition}",
                measured,
                "yes" if clean and clean["events_per_s"] >= target else "no",
                _ratio(value, nchan["events_per_s"] if nchan else None),
                _ratio(value, base["events_per_s"] if base else None),
            ]
        )
    step = {r["server"]: r for r in fanout if r["clients"] == 1000 and r["rate"] == 100}
    if "tickstream" in step:
        ours = step["tickstream"]
        rows.append(
            [
                "p50 / p99 at 100,000 ev/s offered, 1,000 clients (the targets quote Nchan at "
                "4 / 8 ms)",
                f"{ours['p50_ms']} / {ours['p99_ms']} ms at {_fmt(ours['events_per_s'])} ev/s",
                "n/a",
                _ratio(ours["p99_ms"], step["nchan"]["p99_ms"]) + " p99"
                if "nchan" in step
                else "n/a",
                _ratio(ours["p99_ms"], step["baseline"]["p99_ms"]) + " p99"
                if "baseline" in step
                else "n/a",
            ]
        )
    for row in _load(results, day, "latency"):
        met = row["p50_ms"] <= 2 and row["p99_ms"] <= 10
        rows.append(
            [
                "latency, replay 1x, 200 clients on 2 symbols: p50 <= 2 ms, p99 <= 10 ms",
                f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms "
                f"({_fmt(row['events_per_s'])} ev/s)",
                "yes" if met else "no",
                "n/a",
                "n/a",
            ]
        )
    memory = _load(results, day, "memory")
    per_conn = {r["server"]: r for r in memory if r["connections"] == 10_000}
    if "tickstream" in per_conn:
        ours = per_conn["tickstream"]
        rows.append(
            [
                "<= 16 KiB RSS per idle SSE connection at 10,000",
                f"{ours['kib_per_connection']} KiB",
                "yes" if ours["kib_per_connection"] <= 16 else "no",
                _ratio(
                    ours["kib_per_connection"], per_conn.get("nchan", {}).get("kib_per_connection")
                ),
                _ratio(
                    ours["kib_per_connection"],
                    per_conn.get("baseline", {}).get("kib_per_connection"),
                ),
            ]
        )
    held = [r for r in memory if r["server"] == "tickstream"]
    if held:
        most = max(held, key=lambda r: r["connections"])
        rows.append(
            [
                "20,000 concurrent connections on one edge, heartbeats flowing",
                f"{most['held']:,} of {most['connections']:,} held, {most['closed_early']} dropped "
                "(20,000 cannot fit under this machine's open-files limit of 20,000 per process)",
                "yes" if most["held"] >= 20_000 and not most["closed_early"] else "no",
                "n/a",
                "n/a",
            ]
        )
    for row in _load(results, day, "feed"):
        rows.append(
            [
                ">= 500,000 ticks/s to one gRPC subscriber",
                f"{_fmt(row['ticks_per_s'])} ticks/s ({row['ticks_per_message']} ticks/message)",
                "yes" if row["ticks_per_s"] >= 500_000 else "no",
                "n/a",
                "n/a",
            ]
        )
    rows += publish_rows(results, day)
    scaling = [r for r in _load(results, day, "scaling") if r["server"] == "tickstream"]
    feed_cpu = [(r["clients"], r.get("feed_cpu")) for r in scaling if r.get("feed_cpu") is not None]
    if feed_cpu:
        flat = max(v for _, v in feed_cpu) <= 2 * max(min(v for _, v in feed_cpu), 0.01)
        rate = scaling[0]["rate"]
        rows.append(
            [
                "feed CPU per tick does not grow with SSE clients (it grows with edges only)",
                f"feed CPU share at {rate} ticks/s: "
                + ", ".join(f"{c:,} clients {100 * v:.1f}%" for c, v in feed_cpu),
                "yes" if flat else "no",
                "n/a",
                "n/a",
            ]
        )
    return rows


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


def plot(results: Path, day: str) -> list[Path]:
    written = []
    fanout = _load(results, day, "fanout")
    if fanout:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, clients in zip(axes, (1000, 100), strict=True):
            top = 0
            for server, colour in COLOURS.items():
                rows = sorted(
                    (r for r in fanout if r["server"] == server and r["clients"] == clients),
                    key=lambda r: r["offered_per_s"],
                )
                if rows:
                    xs = [r["offered_per_s"] / 1000 for r in rows]
                    ax.plot(
                        xs, [r["events_per_s"] / 1000 for r in rows], "o-", c=colour, label=server
                    )
                    top = max(top, *xs)
            ax.plot([0, top], [0, top], ":", c="grey", label="offered")
            ax.set(title=f"{clients:,} clients", xlabel="offered (k events/s)")
            ax.set_ylabel("delivered (k events/s)")
            ax.legend()
        fig.tight_layout()
        written.append(_save(fig, results / f"{day}-fanout.png"))
    scaling = _load(results, day, "scaling")
    if scaling:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for server, colour in COLOURS.items():
            rows = sorted((r for r in scaling if r["server"] == server), key=lambda r: r["clients"])
            if rows:
                xs = [r["clients"] for r in rows]
                axes[0].plot(xs, [r["events_per_s"] for r in rows], "o-", c=colour, label=server)
                axes[1].plot(
                    xs, [max(r["p99_ms"], 0.01) for r in rows], "o-", c=colour, label=server
                )
        rate = scaling[0]["rate"]
        axes[0].set(xscale="log", yscale="log", xlabel="clients", ylabel="delivered events/s")
        axes[0].set_title(f"delivered vs clients ({rate} events/s each)")
        axes[1].set(xscale="log", yscale="log", xlabel="clients", ylabel="p99 latency (ms)")
        axes[1].set_title("p99 feed ingest -> client vs clients")
        for ax in axes:
            ax.legend()
        fig.tight_layout()
        written.append(_save(fig, results / f"{day}-scaling.png"))
    memory = _load(results, day, "memory")
    if memory:
        fig, ax = plt.subplots(figsize=(6, 4))
        for server, colour in COLOURS.items():
            rows = sorted(
                (r for r in memory if r["server"] == server), key=lambda r: r["connections"]
            )
            if rows:
                ax.plot(
                    [r["held"] for r in rows],  # what the server held, not what was asked
                    [r["rss_kib"] / 1024 for r in rows],
                    "o-",
                    c=colour,
                    label=server,
                )
        ax.set(
            xlabel="open idle SSE connections",
            ylabel="server RSS (MiB)",
            title="RSS vs connections",
        )
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, results / f"{day}-memory.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_report(results: Path, day: str, info: dict[str, Any]) -> Path:
    """Write ``<day>-summary.md`` and the plots; refresh bench/README.md's results block."""
    rows = summary_rows(results, day)
    plots = plot(results, day)
    lines = [
        f"Run of {day} on {info['cpu']} ({info['cpus']} CPUs, Linux {info['kernel']}, "
        f"Python {info['python']}); {info['pinning']}.",
        "",
        "| target | tickstream measured | met | tickstream / Nchan | tickstream / baseline |",
        # ratios of events/s: higher is better; of latency or KiB: lower is better
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        *(f"![{p.stem}](results/{p.name})" for p in plots),
        "",
        f"Raw figures: `bench/results/{day}-*.json`; edge profile at saturation: "
        f"`bench/results/{day}-edge-profile.svg` (flame graph) and `.txt` (collapsed stacks).",
    ]
    summary = results / f"{day}-summary.md"
    summary.write_text("\n".join(lines).replace("](results/", "](") + "\n")
    readme = results.parent / "README.md"
    if readme.exists():
        text = readme.read_text()
        if START in text and END in text:
            head, rest = text.split(START, 1)
            _, tail = rest.split(END, 1)
            readme.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)
    return summary
