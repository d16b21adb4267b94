#!/usr/bin/env python3
"""The workspace's crate graph, dev-dependencies included, and its first
cycle if there is one (cargo itself rejects cycles of normal dependencies,
not those closed by a dev-dependency).

Usage: scripts/dev/crate-graph.py     (run from the repository)
"""
import json
import subprocess
import sys

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--no-deps"]))
names = {p["name"] for p in meta["packages"]}
deps = {
    p["name"]: [(d["name"], d.get("kind") or "normal")
                for d in p["dependencies"] if d["name"] in names]
    for p in meta["packages"]
}
for name in sorted(deps):
    shown = [n if k == "normal" else f"{n} ({k})" for n, k in deps[name]]
    print(f"{name} -> {', '.join(shown)}")

adj = {k: [n for n, _ in v] for k, v in deps.items()}
state = {}


def walk(u, path):
    state[u] = 1
    for v in adj[u]:
        if state.get(v) == 1:
            return path + [v]
        if v not in state:
            found = walk(v, path + [v])
            if found:
                return found
    state[u] = 2
    return None


for u in sorted(adj):
    if u not in state:
        cycle = walk(u, [u])
        if cycle:
            print("cycle:", " -> ".join(cycle))
            sys.exit(1)
print("no cycle, dev-dependencies included")
