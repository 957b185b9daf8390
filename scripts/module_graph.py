#!/usr/bin/env python3
"""The module graph of src/, read from the code: which module refers to
which (`crate::`, `super::` and `self::` paths, in `use` items and inline),
re-exports followed to the child that defines the name.

  scripts/module_graph.py            fail (exit 1) on any cycle: between the
                                     top-level modules of src/, or between
                                     the children of any one module
  scripts/module_graph.py --dot      the top-level graph in Graphviz dot
  scripts/module_graph.py --layers   the top-level modules, leaves first
  scripts/module_graph.py --edges    every edge with one place that makes it

Test code (`#[cfg(test)]` items and `mod tests`) is left out: a test may
reach across the tree. A reference to a parent's own items (`super::X`
where the parent defines X) is not an edge between siblings.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{", re.S)
PUB_USE = re.compile(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", re.S)
CHILD_MOD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z_][A-Za-z0-9_]*)\s*;", re.M)


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def strip_test_code(text):
    """Drops `#[cfg(test)]` items and `mod tests { ... }` blocks."""
    out = []
    i = 0
    pattern = re.compile(r"#\[cfg\(test\)\]|\bmod\s+tests\s*\{")
    while True:
        match = pattern.search(text, i)
        if not match:
            out.append(text[i:])
            break
        out.append(text[i:match.start()])
        j = match.end()
        if match.group(0).startswith("#"):
            # The item after the attribute: up to its `;` or its block's end.
            k = j
            while k < len(text) and text[k] not in "{;":
                k += 1
            if k >= len(text) or text[k] == ";":
                i = k + 1
                continue
            j = k + 1
        depth = 1
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        i = j
    return "".join(out)


class Module:
    def __init__(self, path, file):
        self.path = path  # tuple of names below the crate
        self.file = file
        self.children = set()
        self.reexports = {}  # name -> child module it comes from
        self.text = ""


def load():
    modules = {}

    def visit(path, file):
        module = Module(path, file)
        modules[path] = module
        with open(file, encoding="utf-8") as f:
            text = strip_test_code(strip_comments_and_strings(f.read()))
        module.text = text
        base = os.path.dirname(file) if os.path.basename(file) in ("mod.rs", "lib.rs") else file[:-3]
        for name in CHILD_MOD.findall(text):
            candidates = [os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")]
            for candidate in candidates:
                if os.path.exists(candidate):
                    module.children.add(name)
                    visit(path + (name,), candidate)
                    break
        for body in PUB_USE.findall(text):
            body = " ".join(body.split())
            for first, names in split_use(body):
                if first in module.children:
                    for name in names:
                        module.reexports[name] = first

    visit((), os.path.join(ROOT, "lib.rs"))
    return modules


def split_use(body):
    """`a::{B, c::D}` or `a::B as C` -> [(first segment, [exported names])]."""
    body = body.replace("self::", "")
    first, _, rest = body.partition("::")
    first = first.strip()
    names = []
    for part in re.split(r"[{},]", rest):
        part = part.strip()
        if not part:
            continue
        if " as " in part:
            names.append(part.split(" as ")[1].strip())
        else:
            names.append(part.split("::")[-1].strip())
    return [(first, names)]


def resolve(modules, start, kind, segments):
    """The deepest module a path names (following re-exports of one name)."""
    if kind == "crate":
        path = ()
    elif kind == "self":
        path = start
    else:
        path = start[:-1]
        while segments and segments[0] == "super":
            path = path[:-1]
            segments = segments[1:]
    for segment in segments:
        module = modules.get(path)
        if module is None:
            break
        if segment in module.children:
            path = path + (segment,)
        elif segment in module.reexports:
            path = path + (module.reexports[segment],)
            break
        else:
            break
    return path


def references(modules):
    """(from module, to module, where) for every path in the code."""
    for path, module in modules.items():
        text = module.text
        found = []
        for match in PATH.finditer(text):
            segments = [s for s in match.group(2).split("::") if s]
            found.append((match.group(1), segments, match.start()))
        for match in USE_GROUP.finditer(text):
            prefix = [s for s in match.group(2).split("::") if s]
            depth, j = 1, match.end()
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            inner = text[match.end():j - 1]
            for item in re.split(r",", re.sub(r"\{[^{}]*\}", "", inner)):
                item = item.strip().split(" as ")[0].strip()
                if item and item != "self":
                    found.append((match.group(1), prefix + item.split("::"), match.start()))
            for nested in re.finditer(r"([A-Za-z_][A-Za-z0-9_:]*)::\{([^{}]*)\}", inner):
                for item in nested.group(2).split(","):
                    item = item.strip().split(" as ")[0].strip()
                    if item:
                        found.append(
                            (match.group(1), prefix + nested.group(1).split("::") + [item], match.start())
                        )
        for kind, segments, offset in found:
            if kind == "super" and not path:
                continue
            target = resolve(modules, path, kind, segments)
            line = text.count("\n", 0, offset) + 1
            yield path, target, f"{os.path.relpath(module.file, os.path.join(ROOT, '..'))}:{line}"


def sibling_edges(modules):
    """{parent: {(child a, child b): where}} for references between siblings."""
    edges = defaultdict(dict)
    for source, target, where in references(modules):
        common = 0
        while common < min(len(source), len(target)) and source[common] == target[common]:
            common += 1
        if common == len(source) or common == len(target):
            continue  # to an ancestor's own items, or into its own subtree
        parent = source[:common]
        edge = (source[common], target[common])
        edges[parent].setdefault(edge, where)
    return edges


def cycles(nodes, edges):
    """Strongly connected components of more than one node (Tarjan)."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            connect(v)
    return out


def layers(nodes, edges):
    """Top-level modules in dependency order, leaves first."""
    remaining = set(nodes)
    order = []
    while remaining:
        ready = sorted(n for n in remaining if not any(a == n and b in remaining for a, b in edges))
        if not ready:
            order.append(sorted(remaining))
            break
        order.append(ready)
        remaining -= set(ready)
    return order


def main():
    modules = load()
    edges = sibling_edges(modules)
    if "--edges" in sys.argv:
        for parent in sorted(edges):
            for (a, b), where in sorted(edges[parent].items()):
                print(f"{'::'.join(parent) or 'crate'}: {a} -> {b}  ({where})")
        return 0
    top = edges.get((), {})
    top_nodes = modules[()].children
    if "--dot" in sys.argv:
        print("digraph sluice {\n  rankdir=TB;\n  node [shape=box, fontname=monospace];")
        for a, b in sorted(top):
            print(f'  "{a}" -> "{b}";')
        print("}")
        return 0
    if "--layers" in sys.argv:
        for n, layer in enumerate(layers(top_nodes, top)):
            print(f"{n}: {' '.join(layer)}")
        return 0
    failed = False
    for parent in sorted(edges):
        nodes = modules[parent].children
        for component in cycles(nodes, edges[parent].keys()):
            failed = True
            name = "::".join(parent) or "the crate"
            print(f"cycle among the children of {name}: {' '.join(component)}")
            members = set(component)
            for (a, b), where in sorted(edges[parent].items()):
                if a in members and b in members:
                    print(f"  {a} -> {b}  ({where})")
    if failed:
        return 1
    print(f"module graph: no cycles ({len(top_nodes)} top-level modules, {len(top)} edges between them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
