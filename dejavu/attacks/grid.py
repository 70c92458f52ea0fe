"""The sample level of the image test (SPEC section 3): the most memorized records as an image grid.

One row per record, most memorized first: its background crop, titled with the true label, both
models' predictions and the score (reference entropy - target entropy), then the public images
nearest to the crop under the target, i.e. the neighbours whose labels voted for the prediction.
"""

from __future__ import annotations

import logging
from pathlib import Path

from matplotlib.figure import Figure  # the object API needs no pyplot state and no GUI backend
from PIL import Image

from dejavu.attacks.common import atomic_path
from dejavu.attacks.image import ImageTestResult
from dejavu.crops import CropResult, crop_image
from dejavu.metrics import most_memorized
from dejavu.records import RecordSet

log = logging.getLogger(__name__)


def write_memorized_grid(result: ImageTestResult, records: RecordSet, crops: CropResult, path: Path,
                         n: int = 8, n_neighbours: int = 6) -> Path | None:
    """Returns `path` after drawing the n most memorized A records and their neighbours; None when none is memorized."""
    if "score" not in result.records:
        raise ValueError("the memorized grid needs a two-model result (image_two_model); this one has no "
                         "reference model and so no sample-level score")
    frame = result.records[result.records.split == "A"].set_index("id")
    top = most_memorized(frame.index.to_numpy(), frame.score.to_numpy(), n)
    if not top:
        log.info("no attacked A record is memorized (target right, reference wrong); no grid written to %s", path)
        return None
    names = {i: c for c, i in result.classes.items()}
    attack = result.target_on_a
    row_of = {rid: i for i, rid in enumerate(attack.ids)}
    n_cols = 1 + min(n_neighbours, attack.neighbours.k)
    fig = Figure(figsize=(1.5 * n_cols, 1.9 * len(top)), layout="constrained")
    axes = fig.subplots(len(top), n_cols, squeeze=False)
    for ax_row, (rid, score) in zip(axes, top, strict=True):
        rec = frame.loc[rid]
        title = (f"{rid}\ntrue: {names[rec.label]}\ntarget: {names[rec.pred_target]}, "
                 f"ref: {names[rec.pred_reference]}\nscore {score:.2f}")
        _show(ax_row[0], crop_image(records.by_id(rid), crops.crops[rid]), title)
        for ax, j in zip(ax_row[1:], attack.neighbours.indices[row_of[rid]].tolist(), strict=False):
            neighbour = result.public[j]
            _show(ax, neighbour.load_image(), f"{neighbour.label}")
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=100)
    log.info("wrote the %d most memorized records to %s", len(top), path)
    return Path(path)


def _show(ax, image: Image.Image, title: str) -> None:
    ax.imshow(image)
    ax.set_title(title, fontsize=6)
    ax.set_axis_off()
