#!/usr/bin/env python3
"""Structure figures of the workspace, for issue #12's closing note.

Usage: scripts/dev/structure.py [ROOT]

Prints, for the Rust sources under ROOT/crates:
- the largest function (lines) and the largest file (lines), tests excluded,
  and each crate's largest function;
- the struct with the most fields;
- per crate, the modules that import each other in a circle (strongly
  connected components of the `crate::…` graph between the crate's
  top-level modules, unit tests included, comments skipped, names
  re-exported by lib.rs counted as their module), and how many modules are
  in a circle.
"""
import os, re, sys
from collections import defaultdict

root = sys.argv[1] if len(sys.argv) > 1 else os.getcwd()
crates = os.path.join(root, "crates")

def rust_files(d):
    """Every source file of a crate's `src/`, unit-test files included."""
    for dp, _, fs in os.walk(d):
        for f in fs:
            if f.endswith(".rs"):
                yield os.path.join(dp, f)

def is_test_file(rel):
    return rel.endswith("tests.rs") or f"{os.sep}tests{os.sep}" in rel

def strip_tests(src):
    i = src.find("#[cfg(test)]\nmod tests {")
    return src if i < 0 else src[:i]

largest_fn = (0, "")
largest_file = (0, "")
largest_struct = (0, "")
report = []
for crate in sorted(os.listdir(crates)):
    src_dir = os.path.join(crates, crate, "src")
    if not os.path.isdir(src_dir):
        continue
    graph = defaultdict(set)
    mods = set()
    crate_fn = (0, "")
    # `crate::Name` through a re-export of lib.rs counts as its module.
    reexports = {}
    for lib in ("lib.rs", "main.rs"):
        lp = os.path.join(src_dir, lib)
        if os.path.exists(lp):
            for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+);", open(lp, encoding="utf-8").read()):
                for name in re.findall(r"\w+", m.group(2)):
                    reexports[name] = m.group(1)
    for path in rust_files(src_dir):
        rel = os.path.relpath(path, src_dir)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"):
            top = None
        else:
            mods.add(top)
        full = open(path, encoding="utf-8").read()
        if top:
            # Imports count wherever they are, test modules too: a unit test
            # that builds a whole gateway is an import of the gateway.
            # Plain comments are skipped; doc comments count (an intra-doc
            # link names the module it points at).
            code = "\n".join(
                l for l in full.split("\n")
                if not l.lstrip().startswith("//") or l.lstrip().startswith(("///", "//!"))
            )
            for dep in re.findall(r"crate::(\w+)", code):
                dep = reexports.get(dep, dep)
                if dep != top:
                    graph[top].add(dep)
        if is_test_file(rel):
            continue
        src = strip_tests(full)
        lines = src.count("\n")
        if lines > largest_file[0]:
            largest_file = (lines, f"{crate}/src/{rel}")
        # functions: from `fn name` to the matching closing brace at its indent
        text = src.split("\n")
        for i, l in enumerate(text):
            m = re.match(r"^(\s*)(pub(\([a-z]+\))? )?(async )?(const )?(unsafe )?fn (\w+)", l)
            if m:
                indent = m.group(1)
                for j in range(i, len(text)):
                    if text[j] == indent + "}" or (j > i and text[j].startswith(indent + "}") and text[j].strip() == "}"):
                        n = j - i + 1
                        if n > largest_fn[0]:
                            largest_fn = (n, f"{crate}/src/{rel}:{i+1} {m.group(7)}")
                        if n > crate_fn[0]:
                            crate_fn = (n, f"{rel}:{i+1} {m.group(7)}")
                        break
                    if j > i and l.rstrip().endswith(";"):
                        break
            m = re.match(r"^\s*(pub(\([a-z]+\))? )?struct (\w+)\s*(<[^{]*>)?\s*\{", l)
            if m:
                n = 0
                for j in range(i + 1, len(text)):
                    t = text[j].strip()
                    if t.startswith("}"):
                        break
                    if re.match(r"^(pub(\([a-z]+\))? )?\w+\s*:", t):
                        n += 1
                if n > largest_struct[0]:
                    largest_struct = (n, f"{crate}/src/{rel}:{i+1} {m.group(3)}")
    # Tarjan's SCC
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    def strong(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in mods:
                continue
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(mods):
        if v not in index:
            strong(v)
    in_circle = sum(len(c) for c in sccs)
    report.append((crate, len(mods), in_circle, sccs, crate_fn))

print(f"largest function: {largest_fn[0]} lines ({largest_fn[1]})")
print(f"largest file:     {largest_file[0]} lines ({largest_file[1]}, tests excluded)")
print(f"largest struct:   {largest_struct[0]} fields ({largest_struct[1]})")
for crate, n, c, sccs, (fl, fn) in report:
    print(f"{crate}: {n} modules, {c} in a circle; largest function {fl} lines ({fn})")
    for s in sccs:
        print("   circle:", " ".join(s))
