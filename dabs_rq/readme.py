"""Keep generated Markdown blocks in sync with their source: the results table in README.md
(``dabs-rq table --readme``), the dataset list in docs/datasets.md (``dabs-rq data table --readme``)
and the benchmark summary in docs/performance.md (``dabs-rq bench --readme``)."""

from __future__ import annotations

from pathlib import Path

from dabs_rq.io import write_text_atomic


def inject_block(readme: Path, block: str, markdown: str) -> None:
    """Replace the text between ``<!-- {block} START -->`` and ``<!-- {block} END -->`` with ``markdown``."""
    start_marker, end_marker = f"<!-- {block} START -->", f"<!-- {block} END -->"
    text = Path(readme).read_text(encoding="utf-8")
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no '{start_marker}' ... '{end_marker}' block to update")
    write_text_atomic(readme, text[: start + len(start_marker)] + "\n" + markdown + text[end:])
