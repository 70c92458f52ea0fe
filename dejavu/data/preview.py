"""A contact sheet of a few records: each image with its boxes drawn and its caption as the title."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path

from dejavu.files import atomic_path
from dejavu.records import Record


def write_preview(records: Iterable[Record], path: str | Path, n: int = 12, columns: int = 4) -> Path:
    """Returns `path` after writing a PNG grid of the first `n` records with boxes and captions."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    chosen = [r for _, r in zip(range(n), records, strict=False)]
    if not chosen:
        raise ValueError("write_preview needs at least one record")
    rows = -(-len(chosen) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, record in zip(axes.flat, chosen, strict=False):
        ax.imshow(record.load_image(), extent=(0, record.width, record.height, 0), interpolation="nearest")
        for box in record.boxes:
            ax.add_patch(Rectangle((box.x0, box.y0), box.x1 - box.x0, box.y1 - box.y0,
                                   fill=False, edgecolor="yellow", linewidth=1.5))
            ax.text(box.x0, box.y0, box.label, color="black", fontsize=7, va="bottom",
                    bbox={"facecolor": "yellow", "pad": 1, "linewidth": 0})
        title = f"{record.id} [{record.split}{', x' + str(record.repeat) if record.is_canary else ''}]"
        if record.caption:
            title += "\n" + textwrap.fill(record.caption, 34)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return path
