#!/usr/bin/env python3
"""Checks README.md and docs/*.md: the README stays short and every relative
link resolves.

Fails (exit 1, one line per problem) when:
  - README.md has more than 300 lines;
  - a relative link in README.md or docs/*.md names a file or directory that
    does not exist;
  - an `#anchor` link (on the same page, or `page.md#anchor`) names a heading
    the target page does not have.

Anchors are GitHub's heading slugs: the heading's text lowercased, every
character that is not a letter, a digit, `-`, `_` or a space dropped, spaces
turned into `-`; a repeated slug gets `-1`, `-2`, ... Headings and links inside
fenced code blocks and inline code spans are ignored. Links with a scheme
(`https:`, `mailto:`) are not checked.

Usage: scripts/check_docs.py [REPO_ROOT]   (default: this script's repo)
Python 3.11 standard library only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README_MAX_LINES = 300

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the text may hold one level of brackets.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML_ANCHOR = re.compile(r"<a\s[^>]*(?:name|id)\s*=\s*\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
LINK_IN_HEADING = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def slug(text: str) -> str:
    """GitHub's slug of a heading's text (before de-duplication)."""
    text = LINK_IN_HEADING.sub(r"\1", text).strip().lower()
    kept = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return kept.replace(" ", "-")


class Page:
    """One Markdown file: its heading anchors and its links (with line numbers)."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = path.read_text(encoding="utf-8").splitlines()
        self.anchors: set[str] = set()
        self.links: list[tuple[int, str]] = []
        self._parse()

    def _parse(self) -> None:
        counts: dict[str, int] = {}

        def add_heading(text: str) -> None:
            base = slug(text)
            if base in counts:
                counts[base] += 1
                anchor = f"{base}-{counts[base]}"
            else:
                counts[base] = 0
                anchor = base
            self.anchors.add(anchor)

        fence: str | None = None
        previous_paragraph: str | None = None
        for number, line in enumerate(self.lines, start=1):
            opened = FENCE.match(line)
            if fence is not None:
                if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence) \
                        and not line.strip()[len(opened.group(1)):].strip():
                    fence = None
                continue
            if opened:
                fence = opened.group(1)
                previous_paragraph = None
                continue
            heading = ATX.match(line)
            if heading:
                add_heading(heading.group(2) or "")
                previous_paragraph = None
            elif previous_paragraph is not None and SETEXT.match(line):
                add_heading(previous_paragraph)
                previous_paragraph = None
                continue
            elif line.strip() and not re.match(r"^\s*([-*+]\s|\d+[.)]\s|\||>)", line):
                previous_paragraph = line.strip()
            else:
                previous_paragraph = None
            prose = CODE_SPAN.sub("code", line)
            self.anchors.update(HTML_ANCHOR.findall(prose))
            for match in INLINE_LINK.finditer(prose):
                self.links.append((number, match.group(1)))
            definition = REFERENCE_DEF.match(prose)
            if definition:
                self.links.append((number, definition.group(1)))


def main() -> int:
    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    readme = root / "README.md"
    files = [readme, *sorted((root / "docs").glob("*.md"))]
    problems: list[str] = []
    pages: dict[Path, Page] = {}

    def page(path: Path) -> Page:
        path = path.resolve()
        if path not in pages:
            pages[path] = Page(path)
        return pages[path]

    if not readme.is_file():
        print("check_docs: README.md is missing", file=sys.stderr)
        return 1
    readme_lines = len(page(readme).lines)
    if readme_lines > README_MAX_LINES:
        problems.append(f"README.md: {readme_lines} lines, more than {README_MAX_LINES}")

    checked = anchors_checked = 0
    for path in files:
        source = page(path)
        where = path.relative_to(root)
        for number, raw in source.links:
            target = raw[1:-1] if raw.startswith("<") and raw.endswith(">") else raw
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            file_part = file_part.split("?", 1)[0]
            if file_part:
                resolved = (root / file_part.lstrip("/")) if file_part.startswith("/") \
                    else (path.parent / file_part)
                if not resolved.exists():
                    problems.append(f"{where}:{number}: link to a missing file: {target}")
                    continue
            else:
                resolved = path
            if not anchor:
                continue
            if resolved.is_dir() or resolved.suffix.lower() not in (".md", ".markdown"):
                continue  # line anchors (#L10) and the like are not headings
            anchors_checked += 1
            if anchor not in page(resolved).anchors:
                name = resolved.resolve().relative_to(root) if resolved.resolve().is_relative_to(root) else resolved
                problems.append(f"{where}:{number}: no heading for #{anchor} in {name}")

    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"check_docs: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(
        f"check_docs: OK: README.md {readme_lines}/{README_MAX_LINES} lines, "
        f"{len(files)} files, {checked} relative links resolve ({anchors_checked} with anchors)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
