"""Compare generated Markdown tables by content: cell padding (to_markdown aligns columns) removed."""

from __future__ import annotations

import re
from pathlib import Path


def unpadded(source: Path | str) -> str:
    """The text of ``source`` (a path, or the text itself) with every table line written ``| a | b |`` and every
    separator line ``|---|---|``, so tests can name a row without its column widths."""
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    lines = []
    for line in text.split("\n"):
        if line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            line = (
                "|" + "---|" * len(cells)
                if all(re.fullmatch(r":?-+:?", c) for c in cells)
                else "| " + " | ".join(cells) + " |"
            )
        lines.append(line)
    return "\n".join(lines)
