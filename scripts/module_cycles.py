#!/usr/bin/env python3
"""Lists the `crate::X` edges between the top-level modules of a crate's `src/` and fails when
they form a cycle. Test code (files named `tests.rs` / `*_tests.rs`, and everything after a
`#[cfg(test)]` line) and doc comments are ignored: only what the library itself uses counts.

    scripts/module_cycles.py query/src
"""
import pathlib
import re
import sys


def top_module(src, path):
    rel = path.relative_to(src)
    return rel.parts[0].removesuffix(".rs")


def crate_refs(text):
    """Top-level module names a file's code names as `crate::name` (also inside
    `use crate::{a, b::c}`)."""
    names = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text, re.S):
        for item in group.split(","):
            item = item.strip()
            if item:
                names.add(re.split(r"[:\s]", item)[0])
    return names


def edges(src):
    src = pathlib.Path(src)
    modules = {top_module(src, p) for p in src.rglob("*.rs")} - {"lib", "main"}
    out = {}
    for path in sorted(src.rglob("*.rs")):
        if path.name == "tests.rs" or path.name.endswith("_tests.rs"):
            continue
        text = path.read_text()
        text = text.split("#[cfg(test)]", 1)[0]
        text = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        here = top_module(src, path)
        for name in crate_refs(text):
            if name in modules and name != here and here not in ("lib", "main"):
                out.setdefault(here, set()).add(name)
    return out


def cycles(graph):
    found, state = [], {}

    def visit(node, stack):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    return found


def main():
    graph = edges(sys.argv[1] if len(sys.argv) > 1 else "query/src")
    for node in sorted(graph):
        print(f"{node} -> {', '.join(sorted(graph[node]))}")
    found = cycles(graph)
    for cycle in found:
        print("cycle: " + " -> ".join(cycle))
    if found:
        sys.exit(1)
    print("no cycle")


if __name__ == "__main__":
    main()
