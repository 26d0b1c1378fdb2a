#!/usr/bin/env python3
"""Draws the charts in docs/BENCHMARKS.md from `shmcast bench --json` output.

    target/release/shmcast bench --json > docs/bench-results.jsonl
    python3 scripts/plot_bench.py docs/bench-results.jsonl docs/

Writes bench-latency.svg (one-way latency p50 with p99 and p99.9 marks, by transport and
size, log scale) and bench-throughput.svg (bytes/s by transport and size, log scale).
Standard library only, so regenerating the pictures needs nothing but Python 3.
"""

import json
import math
import sys
from pathlib import Path

TRANSPORTS = ["floor", "shm", "uds-stream", "uds-seqpacket", "pipe"]
COLORS = {
    "floor": "#888888",
    "shm": "#1f77b4",
    "uds-stream": "#d62728",
    "uds-seqpacket": "#ff7f0e",
    "pipe": "#2ca02c",
}


def load(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def human_bytes(n):
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n:g} B"


def human_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:g} µs"
    return f"{ns:g} ns"


def bar_chart(title, groups, series, value, marks, fmt, out):
    """groups: x labels; series: names; value(g, s) -> number or None; marks(g, s) -> list."""
    width, height = 900, 460
    left, right, top, bottom = 80, 170, 50, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for g in groups for s in series for v in [value(g, s)] + marks(g, s) if v]
    if not values:
        return
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))

    def y(v):
        return top + plot_h - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * plot_h

    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="25" text-anchor="middle" font-size="15">{title}</text>',
    ]
    decade = lo
    while decade <= hi:
        yy = y(decade)
        svg.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{yy}" y2="{yy}" stroke="#ddd"/>')
        svg.append(f'<text x="{left - 6}" y="{yy + 4}" text-anchor="end">{fmt(decade)}</text>')
        decade *= 10
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    for gi, g in enumerate(groups):
        x0 = left + gi * group_w + group_w * 0.1
        svg.append(
            f'<text x="{left + gi * group_w + group_w / 2}" y="{top + plot_h + 20}" '
            f'text-anchor="middle">{human_bytes(g)}</text>'
        )
        for si, s in enumerate(series):
            v = value(g, s)
            if not v:
                continue
            x = x0 + si * bar_w
            svg.append(
                f'<rect x="{x:.1f}" y="{y(v):.1f}" width="{bar_w * 0.9:.1f}" '
                f'height="{top + plot_h - y(v):.1f}" fill="{COLORS.get(s, "#444")}">'
                f"<title>{s} {human_bytes(g)}: {fmt(v)}</title></rect>"
            )
            for m in marks(g, s):
                if m:
                    svg.append(
                        f'<line x1="{x:.1f}" x2="{x + bar_w * 0.9:.1f}" y1="{y(m):.1f}" '
                        f'y2="{y(m):.1f}" stroke="black"/>'
                    )
    for si, s in enumerate(series):
        ly = top + 10 + si * 20
        svg.append(f'<rect x="{width - right + 15}" y="{ly}" width="12" height="12" fill="{COLORS.get(s, "#444")}"/>')
        svg.append(f'<text x="{width - right + 32}" y="{ly + 10}">{s}</text>')
    svg.append(
        f'<text x="{left}" y="{height - 12}" fill="#555">message size (log scale on the value axis)</text>'
    )
    svg.append("</svg>")
    Path(out).write_text("\n".join(svg) + "\n", encoding="utf-8")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_bench.py RESULTS.jsonl OUTPUT_DIR")
    rows = load(sys.argv[1])
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)

    def pick(metric, transport, size, **match):
        for r in rows:
            if (
                r.get("metric") == metric
                and r.get("transport") == transport
                and r.get("size") == size
                and all(r.get(k) == v for k, v in match.items())
                and r.get("method", "pingpong-halved") == "pingpong-halved"
                and r.get("reader", "rust") == "rust"
            ):
                return r
        return None

    lat_sizes = sorted({r["size"] for r in rows if r.get("metric") == "latency"})
    lat_series = [t for t in TRANSPORTS if any(pick("latency", t, s) for s in lat_sizes)]
    bar_chart(
        "One-way latency, p50 (bar), p99 and p99.9 (lines)",
        lat_sizes,
        lat_series,
        lambda g, s: (pick("latency", s, g) or {}).get("p50_ns"),
        lambda g, s: [(pick("latency", s, g) or {}).get(k) for k in ("p99_ns", "p999_ns")],
        human_ns,
        out / "bench-latency.svg",
    )
    tp_sizes = sorted(
        {r["size"] for r in rows if r.get("metric") == "throughput" and "consumers" not in r}
    )
    tp_series = [t for t in TRANSPORTS if any(pick("throughput", t, s) for s in tp_sizes)]
    bar_chart(
        "Throughput, one producer and one consumer process (bytes/s)",
        tp_sizes,
        tp_series,
        lambda g, s: (pick("throughput", s, g) or {}).get("bytes_per_s"),
        lambda g, s: [],
        lambda v: human_bytes(v) + "/s",
        out / "bench-throughput.svg",
    )
    print(f"wrote {out / 'bench-latency.svg'} and {out / 'bench-throughput.svg'}")


if __name__ == "__main__":
    main()
