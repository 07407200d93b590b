#!/usr/bin/env python3
"""Checks the import structure of the trainer's sources (trainer/src).

Every `use` path and every inline `crate::...` path of a file is resolved to
the file that defines it (following `pub use` re-exports of a module's
mod.rs or lib.rs), which gives a graph of files. The rules:

- no file of pipeline/ imports a file of methods/, pdt/ or sms/;
- a method module (methods/NAME.rs) imports no other file of methods/
  (neither another method nor the registry) and nothing of pdt/ or sms/;
- no cycle between files.

Prints the counts and every problem; exits 1 if there is one.
Usage: scripts/check-imports.py [trainer/src]
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "trainer", "src")
ROOT = os.path.normpath(ROOT)


def module_file(parts):
    """The file of module path `parts` (from the crate root), or None."""
    if not parts:
        return os.path.join(ROOT, "lib.rs")
    base = os.path.join(ROOT, *parts)
    for f in (base + ".rs", os.path.join(base, "mod.rs")):
        if os.path.isfile(f):
            return f
    return None


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return rel


def strip(text):
    # unit tests sit at the end of a file; `super` there is the file itself
    text = re.split(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text)[0]
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
    return text


def expand(tree):
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+", "", tree)
    i = tree.find("{")
    if i < 0:
        return [re.sub(r"\bas\w+$", "", tree.split(" as ")[0])] if tree else []
    prefix, inner = tree[:i], tree[i + 1:tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [p for it in items if it for p in expand(prefix + it)]


FILES = sorted(
    os.path.join(d, f) for d, _, fs in os.walk(ROOT) for f in fs if f.endswith(".rs"))
TEXT = {f: strip(open(f).read()) for f in FILES}
def absolute(f, path):
    """`path` as segments from the crate root, or None if outside the crate."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    mod = module_of(f)
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] == "self":
        return mod + segs[1:]
    if segs[0] == "super":
        while segs and segs[0] == "super":
            mod, segs = mod[:-1], segs[1:]
        return mod + segs
    if module_file(mod + segs[:1]) is not None:
        return mod + segs
    return None


def reexports(f):
    """Names a module file re-exports with `pub use`, to their paths."""
    out = {}
    for m in re.finditer(r"\bpub\s+use\s+([^;]+);", TEXT[f]):
        for p in expand(m.group(1)):
            name = p.split("::")[-1]
            if name != "*":
                out[name] = p
    return out


def resolve(f, path, seen=0):
    segs = absolute(f, path)
    if segs is None:
        return None
    i = len(segs)
    while i >= 0 and module_file(segs[:i]) is None:
        i -= 1
    target = module_file(segs[:i])
    rest = segs[i:]
    if rest and seen < 8 and os.path.basename(target) in ("mod.rs", "lib.rs"):
        p = reexports(target).get(rest[0])
        if p is not None:
            deeper = resolve(target, p, seen + 1)
            if deeper is not None:
                return deeper
    return target


EDGES = {f: set() for f in FILES}
for f in FILES:
    facade = os.path.basename(f) in ("mod.rs", "lib.rs")
    # A module file's `pub use` re-exports are its facade, not a dependency
    # of its own code: names are resolved through them where they are used.
    paths = [p for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", TEXT[f])
             if not (facade and m.group(1)) for p in expand(m.group(2))]
    body = re.sub(r"\buse\s+[^;]+;", "", TEXT[f])
    paths += re.findall(r"\bcrate(?:::\w+)+", body)
    for p in paths:
        t = resolve(f, p)
        if t is not None and t != f:
            EDGES[f].add(t)


def rel(f):
    return os.path.relpath(f, ROOT)


problems = []
for f, ts in EDGES.items():
    r = rel(f)
    for t in ts:
        rt = rel(t)
        if r.startswith("pipeline/") and rt.split("/")[0] in ("methods", "pdt", "sms"):
            problems.append(f"{r} (pipeline) imports {rt}")
        if r.startswith("methods/") and r != "methods/mod.rs":
            if rt.startswith("methods/") or rt.split("/")[0] in ("pdt", "sms"):
                problems.append(f"{r} (a method) imports {rt}")

# cycles: Tarjan's strongly connected components
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in EDGES[v]:
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)


for v in FILES:
    if v not in index:
        visit(v)
for comp in sccs:
    problems.append("cycle between " + ", ".join(sorted(rel(c) for c in comp)))

n_edges = sum(len(t) for t in EDGES.values())
print(f"{len(FILES)} files, {n_edges} edges, {len(problems)} problems")
for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
