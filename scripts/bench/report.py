#!/usr/bin/env python3
"""Renders scripts/bench.sh results (stdlib only).

Usage: report.py BENCH_JSON [SVG_OUT]
Prints a markdown table (per-load rows, per-server columns, perfgate's ratio
to each peer) and writes a hand-written SVG of throughput and p99 per server.
"""
import json
import sys

R = json.load(open(sys.argv[1]))
SVG = sys.argv[2] if len(sys.argv) > 2 else None
L = R["loads"]
NAMES = {"perfgate": "perfgate", "nginx": "nginx proxy_cache", "varnish": "Varnish", "nginx_pass": "nginx proxy_pass (no cache)"}
ORDER = ["h1_1k_c64", "h1_1k_c256", "h1_1k_c1000", "h1_1k_c1000_rate", "gzip_64k", "br_64k", "h2_1k", "miss_1k"]


def n(x, d=0):
    return "{:,.{}f}".format(x, d) if x is not None else "?"


def cell(r):
    if r is None:
        return ""
    if "na" in r:
        return "n/a: " + r["na"]
    if "failed" in r:
        return "failed: " + r["failed"][:80]
    if "origin_requests" in r:
        return "**%d** origin request%s<br>%d/%d ok, p50 %s / p99 %s ms" % (
            r["origin_requests"], "" if r["origin_requests"] == 1 else "s", r["ok"], r["sent"],
            n(r.get("p50_ms"), 0), n(r.get("p99_ms"), 0))
    if r.get("rps") is None:
        return "failed: " + r.get("note", "")[:80]
    s = "**%s** req/s<br>p50 %s / p99 %s ms<br>%s err · %s µs CPU/req · %s MiB" % (
        n(r["rps"]), n(r["p50_ms"], 2), n(r["p99_ms"], 2), n(r["errors"]), n(r.get("cpu_us_per_req"), 1),
        n(r.get("peak_mib"), 0))
    if r.get("bytes_per_req") and r["bytes_per_req"] > 4096 or "gzip" in r.get("cmd", "") or ": br" in r.get("cmd", ""):
        s += " · %s B/resp" % n(r.get("bytes_per_req"))
    return s


def ok(r):
    return r and "rps" in r and r.get("rps")


def x(v):
    return ("%.2f×" % v) if v >= 0.1 else ("%.3f×" % v)


def ratio(pg, peer, key):
    if not (ok(pg) and ok(peer)):
        return "n/a" if (peer or {}).get("na") else ""
    s = "**%s** req/s" % x(pg["rps"] / peer["rps"])
    if pg.get("p99_ms") and peer.get("p99_ms"):
        s += "<br>p99 %s" % x(pg["p99_ms"] / peer["p99_ms"])
    if pg.get("cpu_us_per_req") and peer.get("cpu_us_per_req"):
        s += "<br>CPU/req %s" % x(pg["cpu_us_per_req"] / peer["cpu_us_per_req"])
    return s


def table():
    rows = ["| load | perfgate | nginx proxy_cache | Varnish | perfgate ÷ nginx | perfgate ÷ Varnish |",
            "| --- | --- | --- | --- | --- | --- |"]
    for key in ORDER + ["stampede"]:
        if key not in L:
            continue
        d = L[key]
        pg, ng, vc = d.get("perfgate"), d.get("nginx"), d.get("varnish")
        if key == "stampede":
            rows.append("| %s | %s | %s | %s | | |" % (R["labels"][key], cell(pg), cell(ng), cell(vc)))
            continue
        rn, rv = ratio(pg, ng, key), ratio(pg, vc, key)
        label = R["labels"][key]
        if "nginx_pass" in d:
            np_ = d["nginx_pass"]
            label += "<br>reference, nginx proxy_pass (no cache): %s" % cell(np_).replace("<br>", ", ")
            if ok(pg) and ok(np_):
                rn += "<br>÷ proxy_pass: **%s** req/s, p99 %s" % (x(pg["rps"] / np_["rps"]), x(pg["p99_ms"] / np_["p99_ms"]))
        rows.append("| %s | %s | %s | %s | %s | %s |" % (label, cell(pg), cell(ng), cell(vc), rn, rv))
    return "\n".join(rows)


def memory():
    m = R.get("memory")
    if not m:
        return ""
    return ("perfgate memory with %s cached %s-byte objects (fresh instance, filled in %s s, %s upstream requests; "
            "L1 entries: %s, L1 accounted bytes: %s MiB): VmRSS %s MiB before → %s MiB after; overhead per entry "
            "beyond the body: **%s bytes** ((after − before − %s × %s) / %s)." % (
                n(m["objects"]), m["body_bytes"], m["fill_s"], n(m.get("upstream_requests")),
                n(m["l1_entries"]) if isinstance(m["l1_entries"], (int, float)) else m["l1_entries"],
                m.get("l1_accounted_mib"), m["rss_before_mib"], m["rss_after_mib"], n(m["overhead_per_entry_bytes"]),
                n(m["objects"]), m["body_bytes"], n(m["objects"])))


# ---------------------------------------------------------------- SVG
COLORS = {"perfgate": "#1b7f3b", "nginx": "#2b6cb0", "varnish": "#c05621", "nginx_pass": "#7f8c9a"}
PLOT = ["h1_1k_c64", "h1_1k_c256", "h1_1k_c1000", "h1_1k_c1000_rate", "gzip_64k", "h2_1k", "miss_1k"]
SHORT = {"h1_1k_c64": "1 KiB hit, 64 conns", "h1_1k_c256": "1 KiB hit, 256 conns",
         "h1_1k_c1000": "1 KiB hit, 1,000 conns", "h1_1k_c1000_rate": "1 KiB hit, 1,000 conns, 30k req/s",
         "gzip_64k": "64 KiB hit, gzip",
         "h2_1k": "1 KiB hit, HTTP/2", "miss_1k": "pass-through (no-store)"}


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_max(v):
    import math
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def panel(y0, h, metric, title, unit, fmt):
    W, x0, x1 = 1000, 80, 980
    loads = [k for k in PLOT if k in L]
    servers = ["perfgate", "nginx", "varnish", "nginx_pass"]
    vals = [L[k][s].get(metric) for k in loads for s in servers if s in L[k] and ok(L[k][s])]
    vals = sorted(v for v in vals if v) or [1]
    # Outliers (e.g. a 1.5 s p99) would flatten every other bar: cap the axis
    # and mark the clipped bars with their value.
    vmax = nice_max(min(vals[-1], 2.5 * vals[int(len(vals) * 0.75)]))
    out = ['<text x="%d" y="%d" font-size="15" font-weight="bold">%s</text>' % (x0, y0 - 12, esc(title))]
    for i in range(6):
        v = vmax * i / 5
        y = y0 + h - h * i / 5
        out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (x0, y, x1, y))
        out.append('<text x="%d" y="%.1f" font-size="11" text-anchor="end">%s</text>' % (x0 - 6, y + 4, fmt(v)))
    gw = (x1 - x0) / len(loads)
    for gi, k in enumerate(loads):
        present = [s for s in servers if s in L[k]]
        bw = min(34, (gw - 20) / len(present))
        gx = x0 + gi * gw + (gw - bw * len(present)) / 2
        for si, s in enumerate(present):
            r = L[k][s]
            x = gx + si * bw
            if not ok(r) or r.get(metric) is None:
                out.append('<text x="%.1f" y="%d" font-size="10" text-anchor="middle" fill="#888">n/a</text>' % (x + bw / 2, y0 + h - 4))
                continue
            v = r[metric]
            bh = h * min(v, vmax) / vmax
            out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %s %s</title></rect>'
                       % (x + 1, y0 + h - bh, bw - 2, bh, COLORS[s], esc(NAMES[s]), esc(SHORT[k]), fmt(v), unit))
            clipped = v > vmax
            if clipped:  # the value inside the top of the (full-height) bar
                out.append('<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle" font-weight="bold" fill="white">↑%s</text>'
                           % (x + bw / 2, y0 + 12, fmt(v)))
            else:
                out.append('<text x="%.1f" y="%.1f" font-size="9" text-anchor="middle">%s</text>' % (x + bw / 2, y0 + h - bh - 3, fmt(v)))
        out.append('<text x="%.1f" y="%d" font-size="11" text-anchor="middle">%s</text>' % (x0 + gi * gw + gw / 2, y0 + h + 16, esc(SHORT[k])))
    out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>' % (x0, y0 + h, x1, y0 + h))
    return out


def svg():
    W, H = 1000, 640
    o = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">' % (W, H, W, H),
         '<rect width="100%" height="100%" fill="white"/>']
    meta = R["meta"]
    o.append('<text x="80" y="24" font-size="13" fill="#444">%s</text>' % esc(
        "scripts/bench.sh%s, %s, %d cores (shared), loopback; wrk -t2 / h2load -c64 -m10" % (
            " --quick" if meta["quick"] else "", meta["date"][:10], meta["nproc"])))
    kfmt = lambda v: ("%.0fk" % (v / 1000)) if v >= 1000 else "%.0f" % v
    o += panel(70, 210, "rps", "Throughput (requests/s, higher is better)", "req/s", kfmt)
    o += panel(370, 210, "p99_ms", "p99 latency (ms, lower is better)", "ms", lambda v: ("%.1f" % v) if v < 10 else "%.0f" % v)
    lx = 80
    for s in ["perfgate", "nginx", "varnish", "nginx_pass"]:
        o.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/>' % (lx, H - 26, COLORS[s]))
        o.append('<text x="%d" y="%d" font-size="12">%s</text>' % (lx + 16, H - 16, esc(NAMES[s])))
        lx += 60 + 7 * len(NAMES[s])
    o.append("</svg>")
    return "\n".join(o) + "\n"


print()
print(table())
print()
print(memory())
if SVG:
    open(SVG, "w").write(svg())
    print("\n(plot written to %s; raw numbers in %s)" % (SVG, sys.argv[1]), file=sys.stderr)
