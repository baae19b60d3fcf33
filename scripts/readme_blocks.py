"""Marked blocks of README.md and docs/*.md: text between ``<!-- readme-output: NAME -->`` and ``<!-- /readme-output -->``.

A block is either inline (``takes <!-- readme-output: x.time -->77 s<!-- /readme-output -->``) or spans
lines (the markers on their own lines around a fenced output block or a table). Its content is
rendered from a committed results file by ``scripts/readme_outputs.py``; ``tests/integration/test_readme_outputs.py``
checks that every block equals its rendering and that every rendering is quoted in exactly one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

OPEN = "<!-- readme-output: {name} -->"
CLOSE = "<!-- /readme-output -->"
_BLOCK = re.compile(r"<!-- readme-output: (?P<name>[\w.\-]+) -->(?P<content>.*?)<!-- /readme-output -->", re.DOTALL)


class BlockError(ValueError):
    """A README whose markers do not pair up, or a block with no rendering."""


@dataclass(frozen=True)
class Block:
    name: str
    content: str  # the text between the markers, as written
    line: int  # 1-based line of the opening marker

    @property
    def body(self) -> str:
        """The content without the newlines that separate a multi-line block from its markers."""
        return self.content.strip("\n")


def find_blocks(text: str) -> list[Block]:
    """Every marked block of ``text``, in order; unpaired or nested markers are a `BlockError`."""
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        if "<!-- readme-output:" in match["content"]:
            raise BlockError(f"line {line}: block {match['name']!r} is not closed before the next one opens")
        blocks.append(Block(match["name"], match["content"], line))
    opened = text.count("<!-- readme-output:")
    closed = text.count(CLOSE)
    if opened != len(blocks) or closed != len(blocks):
        raise BlockError(f"{opened} opening and {closed} closing readme-output markers, {len(blocks)} paired")
    return blocks


def blocks_by_name(paths: list[Path]) -> dict[str, tuple[Path, Block]]:
    """Every marked block of the files ``paths`` with the file it is in, by name; a name used twice, in one
    file or in two, is a `BlockError`."""
    found: dict[str, tuple[Path, Block]] = {}
    for path in paths:
        for block in find_blocks(path.read_text()):
            if block.name in found:
                first, earlier = found[block.name]
                raise BlockError(f"block {block.name!r} quoted twice: {first.name} line {earlier.line} "
                                 f"and {path.name} line {block.line}")
            found[block.name] = (path, block)
    return found


def replace_blocks(text: str, rendered: dict[str, str]) -> str:
    """``text`` with each block's content replaced by ``rendered[name]`` (multi-line blocks stay multi-line)."""
    find_blocks(text)  # validates the pairing
    missing = sorted({block.name for block in find_blocks(text)} - set(rendered))
    if missing:
        raise BlockError(f"no rendering for README block(s): {', '.join(missing)}")

    def substitute(match: re.Match) -> str:
        body = rendered[match["name"]].strip("\n")
        content = match["content"]
        if content.startswith("\n"):
            body = "\n" + body + "\n"
        return OPEN.format(name=match["name"]) + body + CLOSE

    return _BLOCK.sub(substitute, text)
