#!/usr/bin/env python3
"""Runs the side-by-side loads for scripts/bench.sh (stdlib only).

Reads the run description (ports, pids, mode) from the JSON file given as
argv[1], runs every load against every server (interleaved: load by load),
measures client-side throughput/latency/errors and server-side CPU seconds and
peak resident memory, runs the perfgate memory test, and writes the raw
numbers as JSON to argv[2].
"""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

CFG = json.load(open(sys.argv[1]))
OUT = sys.argv[2]
QUICK = CFG["quick"]
SECS = 3 if QUICK else 10
DIR = CFG["dir"]
HERE = os.path.dirname(os.path.abspath(__file__))
TCK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes
def children(pid):
    r = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(x) for x in r.stdout.split()]


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def root_pid(server):
    s = CFG["servers"][server]
    if "pidfile" in s:
        return int(open(s["pidfile"]).read().split()[0])
    return int(s["pid"])


def cpu_seconds(server):
    total = 0
    for p in tree(root_pid(server)):
        try:
            f = open("/proc/%d/stat" % p).read()
        except OSError:
            continue
        fields = f[f.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TCK


def status_kib(pid, key):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_mib(server):
    return sum(status_kib(p, "VmHWM") for p in tree(root_pid(server))) / 1024


# ---------------------------------------------------------------- clients
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        return None
    x = float(m.group(1))
    return {"us": x / 1000, "ms": x, "s": x * 1000, "m": x * 60000}[m.group(2)]


def size_bytes(v):
    m = re.match(r"([\d.]+)([KMGT]?B)$", v)
    x = float(m.group(1))
    return x * {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}[m.group(2)]


def wrk(url, conns, header=None, secs=SECS, script=None, env=None):
    cmd = ["wrk", "-t2", "-c%d" % conns, "-d%ds" % secs, "--latency", "--timeout", "5s"]
    if header:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60,
                         env=dict(os.environ, **(env or {}))).stdout
    res = {"tool": "wrk", "cmd": " ".join(cmd)}
    m = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w?B) read", out)
    res["requests"] = int(m.group(1))
    res["bytes_read"] = size_bytes(m.group(3))
    res["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    for p in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+(\S+)" % p, out, re.M)
        res["p%s_ms" % p] = ms(m.group(1)) if m else None
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    res["errors"] = errs
    return res


def h2load(url, n, secs_hint, rate=None):
    """HTTP/2 (h2c) with -c64 -m10 and n requests; or, with rate=(conns,
    rps_per_conn), HTTP/1.1 at a fixed request rate for SECS (open loop:
    latency is not bounded by the client's own pace)."""
    logf = os.path.join(DIR, "h2load.log")
    if rate:
        conns, per = rate
        n = conns * per * SECS
        cmd = ["h2load", "--h1", "-t2", "-c%d" % conns, "--rps=%d" % per, "-n%d" % n,
               "--log-file=" + logf, url]
        shown = cmd[:6]
    else:
        cmd = ["h2load", "-t2", "-c64", "-m10", "-n%d" % n, "--log-file=" + logf, url]
        shown = cmd[:5]
    t = subprocess.run(cmd, capture_output=True, text=True, timeout=SECS + 120)
    out = t.stdout
    res = {"tool": "h2load", "cmd": " ".join(shown + [url])}
    m = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    if not m:
        res.update(rps=None, errors=n, note=(out + t.stderr)[-300:])
        return res
    res["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    res["requests"] = int(m.group(4))
    ok2xx = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
    res["errors"] = n - ok2xx
    m = re.search(r"traffic: .*?\((\d+)\) total", out)
    res["bytes_read"] = int(m.group(1)) if m else None
    lat = []
    for line in open(logf):
        parts = line.split()
        if len(parts) >= 3:
            lat.append(int(parts[2]) / 1000)
    lat.sort()
    res["p50_ms"] = lat[len(lat) // 2] if lat else None
    res["p99_ms"] = lat[int(len(lat) * 0.99)] if lat else None
    os.unlink(logf)
    return res


def measured(server, fn):
    c0 = cpu_seconds(server)
    r = fn()
    if not os.path.exists("/proc/%d" % root_pid(server)):
        raise RuntimeError("%s is no longer running" % server)
    r["cpu_s"] = round(cpu_seconds(server) - c0, 3)
    if r.get("requests"):
        r["cpu_us_per_req"] = round(r["cpu_s"] / r["requests"] * 1e6, 2)
        if r.get("bytes_read"):
            r["bytes_per_req"] = round(r["bytes_read"] / r["requests"])
    r["peak_mib"] = round(peak_mib(server), 1)
    return r


def base(server):
    return "http://127.0.0.1:%d" % CFG["servers"][server]["port"]


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict((k.lower(), v) for k, v in r.headers.items()), r.read()


# ---------------------------------------------------------------- loads
PROXIES = ["perfgate", "nginx", "varnish"]
NA = {
    ("br_64k", "nginx"): "nginx 1.22 (Debian) has no brotli module",
    ("br_64k", "varnish"): "Varnish has no brotli support (would send the 64 KiB identity body)",
}
LOADS = [
    ("h1_1k_c64", "cached 1 KiB, HTTP/1.1, 64 conns", lambda s: wrk(base(s) + "/e1k.json", 64)),
    ("h1_1k_c256", "cached 1 KiB, HTTP/1.1, 256 conns", lambda s: wrk(base(s) + "/e1k.json", 256)),
    ("h1_1k_c1000", "cached 1 KiB, HTTP/1.1, 1,000 conns", lambda s: wrk(base(s) + "/e1k.json", 1000)),
    ("gzip_64k", "cached 64 KiB, `Accept-Encoding: gzip`, 64 conns",
     lambda s: wrk(base(s) + "/e64k.json", 64, "Accept-Encoding: gzip")),
    ("br_64k", "cached 64 KiB, `Accept-Encoding: br`, 64 conns",
     lambda s: wrk(base(s) + "/e64k.json", 64, "Accept-Encoding: br")),
    ("h2_1k", "cached 1 KiB, HTTP/2 h2c (h2load -c64 -m10)",
     lambda s: h2load("http://127.0.0.1:%d/e1k.json" % CFG["servers"][s].get("h2_port", CFG["servers"][s]["port"]),
                      50000 if QUICK else 200000, SECS)),
    ("h1_1k_c1000_rate", "cached 1 KiB, HTTP/1.1, 1,000 conns at a fixed 30,000 req/s (h2load --rps)",
     lambda s: h2load(base(s) + "/e1k.json", None, SECS, rate=(1000, 30))),
    ("miss_1k", "pass-through: 1 KiB `no-store`, 64 conns", lambda s: wrk(base(s) + "/nocache/e1k.json", 64)),
]


def check_setup():
    """Warm every proxy and check it answers hits (and compressed variants)."""
    for s in PROXIES:
        for path, ae in (("/e1k.json", None), ("/e64k.json", "gzip"), ("/e64k.json", "br"), ("/e64k.json", None)):
            for _ in range(3):
                st, h, body = get(base(s) + path, {"Accept-Encoding": ae} if ae else {})
            hit = h.get("cache-status") or h.get("x-cache") or ("age " + h.get("age", "?"))
            log("  %-8s %-10s AE=%-5s -> %d, %6d bytes, content-encoding=%s, %s"
                % (s, path, ae or "-", st, len(body), h.get("content-encoding", "-"), hit))
            if st != 200:
                raise SystemExit("setup failed: %s %s -> %d" % (s, path, st))
        st, h, body = get(base(s) + "/nocache/e1k.json")
        if st != 200:
            raise SystemExit("setup failed: %s /nocache -> %d" % (s, st))
    # a short warm-up run per server
    for s in PROXIES + ["nginx_pass"]:
        wrk(base(s) + ("/nocache/e1k.json" if s == "nginx_pass" else "/e1k.json"), 64, secs=1)


def stampede(server, tag):
    path = "/slow/stampede-%s-%d" % (server, tag)
    out = subprocess.run([sys.executable, os.path.join(HERE, "stampede.py"),
                          str(CFG["servers"][server]["port"]), path, "1000", "20"],
                         capture_output=True, text=True, timeout=90)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    _, _, body = get("http://127.0.0.1:%d/count?path=%s" % (CFG["slow_port"], path))
    r["origin_requests"] = int(body)
    r["path"] = path
    return r


def memory_test():
    """A fresh perfgate, 100,000 distinct cached 1 KiB objects, RSS before/after."""
    port, admin = CFG["mem_port"], CFG["mem_admin_port"]
    env = dict(os.environ, PERFGATE_LOG="warn", PERFGATE_CACHE__MAX_BYTES="1GiB")
    p = subprocess.Popen([CFG["perfgate_bin"], "serve", "--upstream", "http://127.0.0.1:%d" % CFG["origin_port"],
                          "--listen", "127.0.0.1:%d" % port, "--admin-listen", "127.0.0.1:%d" % admin],
                         env=env, stdout=open(os.path.join(DIR, "perfgate-mem.log"), "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                get("http://127.0.0.1:%d/any/warm" % port)
                break
            except Exception:
                time.sleep(0.1)
        wrk("http://127.0.0.1:%d/any/warm" % port, 64, secs=1)
        time.sleep(0.5)
        before = status_kib(p.pid, "VmRSS")
        n = 100000

        def entries():
            try:
                _, _, body = get("http://127.0.0.1:%d/admin/cache/stats" % admin)
                d = json.loads(body)["data"]
                return ((d.get("layers") or {}).get("l1") or {}).get("entries", d.get("entries")), d
            except Exception:
                return None, None

        # wrk keeps running until -d even once its threads stopped: watch the
        # entry count and stop wrk (our child) once every path was fetched.
        t0 = time.time()
        w = subprocess.Popen(["wrk", "-t2", "-c64", "-d60s", "-s", os.path.join(HERE, "paths.lua"),
                              "http://127.0.0.1:%d/" % port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, PATH_PREFIX="/any/", PATHS_MAX=str(n), WRK_THREADS="2"))
        last, still = None, 0
        while time.time() - t0 < 60 and w.poll() is None:
            e, _ = entries()
            if e is not None and e >= n + 1:  # + the warm-up entry
                break
            # wrk cuts its last in-flight requests when a thread stops: stop
            # waiting once the count is within 0.1 % and no longer moves.
            still = still + 1 if e == last else 0
            if e is not None and e >= n * 0.999 and still >= 5:
                break
            last = e
            time.sleep(0.2)
        fill_s = time.time() - t0
        w.terminate()
        w.wait(5)
        time.sleep(1.0)
        after = status_kib(p.pid, "VmRSS")
        hwm = status_kib(p.pid, "VmHWM")
        _, _, body1 = get("http://127.0.0.1:%d/any/123" % port)
        e, stats = entries()
        l1 = ((stats or {}).get("layers") or {}).get("l1") or {}
        stored = (e - 1) if isinstance(e, int) and e > 1 else n  # minus the warm-up entry
        return {"objects": stored, "body_bytes": len(body1), "upstream_requests": (stats or {}).get("upstream_requests"),
                "fill_s": round(fill_s, 1), "rss_before_mib": round(before / 1024, 1),
                "rss_after_mib": round(after / 1024, 1), "hwm_mib": round(hwm / 1024, 1),
                "l1_entries": e, "l1_accounted_mib": round(l1.get("bytes", 0) / 2 ** 20, 1),
                "overhead_per_entry_bytes": round((after * 1024 - before * 1024 - stored * len(body1)) / stored)}
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    t_start = time.time()
    log("checking and warming the proxies:")
    check_setup()
    results = {"meta": {"quick": QUICK, "secs": SECS, "nproc": os.cpu_count(),
                        "loadavg_start": open("/proc/loadavg").read().split()[:3],
                        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                        "versions": CFG.get("versions", {})},
               "loads": {}, "labels": {}, "na": {}}
    for key, label, fn in LOADS:
        results["labels"][key] = label
        results["loads"][key] = {}
        servers = PROXIES + (["nginx_pass"] if key == "miss_1k" else [])
        for s in servers:
            if (key, s) in NA:
                results["loads"][key][s] = {"na": NA[(key, s)]}
                continue
            try:
                r = measured(s, lambda: fn(s))
            except Exception as e:  # keep going: report the failure
                r = {"failed": repr(e)[:300]}
            results["loads"][key][s] = r
            log("  %-12s %-9s %s" % (key, s, json.dumps({k: r.get(k) for k in
                ("rps", "p50_ms", "p99_ms", "errors", "cpu_s", "cpu_us_per_req", "bytes_per_req", "peak_mib", "na", "failed")
                if r.get(k) is not None})))
            time.sleep(0.5)
    results["labels"]["stampede"] = "cold-key stampede: 1,000 concurrent requests, one new key, 200 ms origin"
    results["loads"]["stampede"] = {}
    tag = int(time.time())
    for s in PROXIES:
        c0 = cpu_seconds(s)
        try:
            r = stampede(s, tag)
        except Exception as e:
            r = {"failed": repr(e)[:300]}
        r["cpu_s"] = round(cpu_seconds(s) - c0, 3)
        r["peak_mib"] = round(peak_mib(s), 1)
        results["loads"]["stampede"][s] = r
        log("  %-12s %-9s %s" % ("stampede", s, json.dumps(r)))
    log("memory test: 100,000 cached 1 KiB objects in a fresh perfgate")
    results["memory"] = memory_test()
    log("  " + json.dumps(results["memory"]))
    results["meta"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    results["meta"]["elapsed_s"] = round(time.time() - t_start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(OUT)), exist_ok=True)
    json.dump(results, open(OUT, "w"), indent=1)


main()
