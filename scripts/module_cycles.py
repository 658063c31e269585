#!/usr/bin/env python3
"""Lists the `crate::X` edges between the top-level modules of a crate's `src/` and fails when
they form a cycle. Test code (files named `tests.rs` / `*_tests.rs`, and everything after a
`#[cfg(test)]` line) and doc comments are ignored: only what the library itself uses counts.

    scripts/module_cycles.py query/src            # top-level modules
    scripts/module_cycles.py query/src metrics    # the children of `metrics`
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


def code(path):
    text = path.read_text().split("#[cfg(test)]", 1)[0]
    return "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))


def is_test(path):
    return path.name == "tests.rs" or path.name.endswith("_tests.rs")


def edges(src, inside=None):
    """Edges between the top-level modules of `src`, or between the children of the
    top-level module `inside` (named as `crate::inside::x`, or `super::x` from a child)."""
    src = pathlib.Path(src)
    root = src / inside if inside else src
    modules = {top_module(root, p) for p in root.rglob("*.rs")} - {"lib", "main", "mod"}
    out = {}
    for path in sorted(root.rglob("*.rs")):
        if is_test(path):
            continue
        text = code(path)
        here = top_module(root, path)
        if here in ("lib", "main", "mod"):
            continue
        if inside:
            names = set(re.findall(rf"\bcrate::{inside}::([a-z_][a-z0-9_]*)", text))
            if len(path.relative_to(root).parts) == 1:
                names |= set(re.findall(r"\bsuper::([a-z_][a-z0-9_]*)", text))
                for group in re.findall(r"\bsuper::\{([^}]*)\}", text, re.S):
                    names |= {re.split(r"[:\s]", i.strip())[0] for i in group.split(",") if i.strip()}
        else:
            names = crate_refs(text)
        for name in names:
            if name in modules and name != here:
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
    graph = edges(
        sys.argv[1] if len(sys.argv) > 1 else "query/src",
        sys.argv[2] if len(sys.argv) > 2 else None,
    )
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
