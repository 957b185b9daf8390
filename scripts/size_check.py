#!/usr/bin/env python3
"""Size limits on src/: no source file over 800 lines before its tests (the
first `#[cfg(test)]`), no function over 100 lines (from its `fn` line to its
closing brace, doc comments and attributes not counted).

  scripts/size_check.py           fail (exit 1) on any file or function over
  scripts/size_check.py --report  the longest files and functions, passing or not
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
MAX_FILE = 800
MAX_FN = 100

FN = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)")


def code_lines(path):
    """The file's lines before its first `#[cfg(test)]`."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            return lines[:n]
    return lines


def blank(match):
    """The match with everything but its newlines blanked."""
    return re.sub(r"[^\n]", " ", match.group(0))


def without_strings(lines):
    """The lines with comments, string and char literals blanked, so braces
    inside them are not counted."""
    text = "\n".join(lines)
    text = re.sub(r"/\*.*?\*/", blank, text, flags=re.S)
    # A raw string's `r` starts a token: the `r"` that ends "user" is not one.
    text = re.sub(r'(?<![A-Za-z0-9_])r(#+)"(?:.|\n)*?"\1', blank, text)
    text = re.sub(r'(?<![A-Za-z0-9_])r"[^"]*"', blank, text)
    text = re.sub(r'b?"(?:\\.|[^"\\])*"', blank, text, flags=re.S)
    text = re.sub(r"b?'(?:\\.|[^'\\])'", blank, text)
    text = re.sub(r"//[^\n]*", blank, text)
    return text.split("\n")


def functions(lines):
    """(name, first line number, length) of each fn with a body."""
    stripped = without_strings(lines)
    out = []
    for n, line in enumerate(stripped):
        match = FN.match(line)
        if not match:
            continue
        depth = 0
        opened = False
        for m in range(n, len(stripped)):
            text = stripped[m]
            if not opened and ";" in text and "{" not in text:
                break  # a declaration without a body
            depth += text.count("{") - text.count("}")
            opened = opened or "{" in text
            if opened and depth <= 0:
                out.append((match.group(1), n + 1, m - n + 1))
                break
    return out


def main():
    report = "--report" in sys.argv
    files, fns = [], []
    for directory, _, names in os.walk(ROOT):
        for name in names:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, os.path.join(ROOT, ".."))
            lines = code_lines(path)
            files.append((len(lines), rel))
            for fn, line, length in functions(lines):
                fns.append((length, f"{rel}:{line} {fn}"))
    files.sort(reverse=True)
    fns.sort(reverse=True)
    if report:
        print("longest files (lines before tests):")
        for length, rel in files[:10]:
            print(f"  {length:5} {rel}")
        print("longest functions:")
        for length, where in fns[:10]:
            print(f"  {length:5} {where}")
        return 0
    bad_files = [(l, r) for l, r in files if l > MAX_FILE]
    bad_fns = [(l, w) for l, w in fns if l > MAX_FN]
    for length, rel in bad_files:
        print(f"file over {MAX_FILE} lines: {rel} ({length})")
    for length, where in bad_fns:
        print(f"function over {MAX_FN} lines: {where} ({length})")
    if bad_files or bad_fns:
        return 1
    print(
        f"sizes: OK, {len(files)} files (longest {files[0][0]} lines), "
        f"{len(fns)} functions (longest {fns[0][0]} lines)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
