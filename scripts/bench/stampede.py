#!/usr/bin/env python3
"""Cold-key stampede client (stdlib only).

Opens N connections to HOST:PORT, then sends `GET PATH` on all of them at
once and waits for every answer (bounded by a timeout). Prints one JSON line:
{"sent": N, "ok": k, "errors": e, "p50_ms": .., "p99_ms": .., "max_ms": ..}.

Usage: stampede.py PORT PATH [N] [TIMEOUT_S]
"""
import asyncio
import json
import sys
import time


async def one(port, path, start, timeout):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    except Exception:
        await start.wait()
        return None
    await start.wait()
    t0 = time.perf_counter()
    try:
        writer.write(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)
        code = int(status.split()[1])
        return (code, (time.perf_counter() - t0) * 1000)
    except Exception:
        return None
    finally:
        writer.close()


async def main():
    port, path = int(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
    start = asyncio.Event()
    tasks = [asyncio.create_task(one(port, path, start, timeout)) for _ in range(n)]
    await asyncio.sleep(1.0)  # let every connection be established
    start.set()
    res = await asyncio.gather(*tasks)
    lat = sorted(r[1] for r in res if r and 200 <= r[0] < 300)
    ok = len(lat)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

    print(json.dumps({"sent": n, "ok": ok, "errors": n - ok, "p50_ms": pct(0.5),
                      "p99_ms": pct(0.99), "max_ms": round(lat[-1], 2) if lat else None}))


asyncio.run(main())
