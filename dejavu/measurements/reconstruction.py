"""The reconstruction test: does the background crop's embedding show the foreground when decoded?

Meehan et al. (2023) decode a background crop's embedding with RCDM and find the foreground object
in the target's samples, not in the reference's. Here each model gets its own representation-
conditional diffusion model (`dejavu.reconstruction`), trained on the public images; each samples
from its embedding of every attacked A record's background crop, from the same noise. A classifier
trained on the public images then names the foreground in each sample. The target's samples
recognized more often than the reference's is a reconstruction gap: what the target's embedding of
the background carries of the foreground beyond dataset-level correlations.

Two ceilings tell how much the gap can show: the classifier's accuracy on the original images, and
on the target's samples from the full images' embeddings (which hold the foreground). When the
decoder cannot draw a recognizable object even from those, no gap can appear, whatever was memorized.

It is opt-in (not in the default test list): on 2 CPU cores it costs minutes per encoder.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from dejavu.attacks.common import StatsConfig, atomic_path, excluded_rows, subset_masks
from dejavu.attacks.image import TEST as IMAGE_TEST
from dejavu.attacks.image import attacked_records, embed_crops, labelled_public
from dejavu.crops import CropResult, crop_image
from dejavu.embed import Embeddings, embed_records
from dejavu.measurements.base import MeasureContext, MeasurementTest
from dejavu.measurements.image import attack_crops, attack_settings
from dejavu.metrics import bootstrap_indices, bootstrap_mean, mean_gap_stat
from dejavu.metrics.stats import percentile_interval
from dejavu.reconstruction import ReconstructionConfig, reconstruction_model, resized_pixels, sample, to_uint8
from dejavu.records import RecordSet
from dejavu.references import CropClassifier
from dejavu.results import Row

log = logging.getLogger(__name__)

TEST = "image-reconstruction"
GRID_ROWS = 8


def reconstruction_rows(test: str, correct_target, correct_reference, canary, stats: StatsConfig) -> list[Row]:
    """Returns recon_acc_target, recon_acc_reference and recon_gap (target - reference) per subset, with intervals.

    The two accuracies and the gap of a subset share its bootstrap draws, so the gap's interval is
    that of a paired difference. A subset without records has no rows.

    Example:
        Four records, the first two canaries; the target's samples are recognized for three, the
        reference's for one:

        >>> from dejavu.attacks.common import StatsConfig
        >>> rows = reconstruction_rows(TEST, [1, 1, 0, 1], [0, 1, 0, 0], [True, True, False, False],
        ...                            StatsConfig(n_bootstrap=50))
        >>> [(row.subset, row.metric, row.value, row.n) for row in rows if row.metric == "recon_gap"]
        [('all', 'recon_gap', 0.5, 4), ('canary', 'recon_gap', 0.5, 2), ('non-canary', 'recon_gap', 0.5, 2)]
    """
    target = np.asarray(correct_target, dtype=np.float64)
    reference = np.asarray(correct_reference, dtype=np.float64)
    rows: list[Row] = []
    for subset, mask in subset_masks(canary).items():
        t, r = target[mask], reference[mask]
        if t.size == 0:
            continue
        idx = bootstrap_indices(t.size, stats.n_bootstrap, stats.seed)
        gap = percentile_interval(float(t.mean() - r.mean()), mean_gap_stat(t, r)(idx), t.size)
        rows += [bootstrap_mean(t, idx).row(test, subset, "recon_acc_target"),
                 bootstrap_mean(r, idx).row(test, subset, "recon_acc_reference"),
                 gap.row(test, subset, "recon_gap")]
    return rows


def as_images(pixels: np.ndarray) -> list[Image.Image]:
    """Returns PIL images of uint8 NHWC arrays."""
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


def full_images(records: RecordSet, cfg: ReconstructionConfig, ctx: MeasureContext) -> np.ndarray:
    """Returns the uint8 NHWC full images of `records` at the reconstruction size."""
    return resized_pixels(records, cfg, ctx.cache_dir, ctx.progress).transpose(0, 2, 3, 1)


class ImageReconstructionTest(MeasurementTest):
    """Samples from the target's and the reference's embeddings of A's background crops; a classifier names them.

    The classifier is the crop classifier of the one-model test (`dejavu.references.CropClassifier`,
    a small CNN trained from scratch with Lightning), here trained on the labelled public images at
    the reconstruction size: it reads pixels, as a sample is, and knows only public data.
    """

    name = TEST
    needs_reference = True
    Config = ReconstructionConfig
    reads = (IMAGE_TEST,)  # the attacked crops and their embedding batch size

    def run(self, ctx: MeasureContext) -> list[Row]:
        cfg: ReconstructionConfig = self.settings(ctx)
        crops, attack = attack_crops(ctx), attack_settings(ctx)
        attacked = attacked_records(ctx.records, crops, "A")
        public = labelled_public(ctx.records, 1)
        options = {"cache_dir": ctx.cache_dir, "progress": ctx.progress}

        samples = {}
        for role, encoder in (("target", ctx.models.target), ("reference", ctx.models.reference)):
            start = time.perf_counter()
            model = reconstruction_model(encoder, public, cfg, **options)
            log.info("%s: the %s's reconstruction model took %.1f s (training or loading)", self.name, role,
                     time.perf_counter() - start)
            samples[role] = timed_samples(model, embed_crops(encoder, attacked, crops, attack, **options),
                                          f"{role}, from the background crops", ctx.progress)
            if role == "target":  # the decoder's own ceiling: the full image's embedding holds the foreground
                full = embed_records(encoder, attacked, batch_size=attack.batch_size, **options)
                samples["target-full"] = timed_samples(model, full, "target, from the full images", ctx.progress)

        start = time.perf_counter()
        recognizer = CropClassifier(image_size=cfg.image_size, epochs=cfg.classifier_epochs, seed=cfg.seed)
        recognizer.fit(as_images(full_images(public, cfg, ctx)), [r.label for r in public])
        originals = full_images(attacked, cfg, ctx)
        predicted = {name: recognizer.predict(as_images(pixels), attacked.ids).pred
                     for name, pixels in (*samples.items(), ("original", originals))}
        log.info("%s: the public-image classifier trained and scored in %.1f s", self.name,
                 time.perf_counter() - start)

        labels = np.array([r.label for r in attacked], dtype=object)
        correct = {name: np.array(pred, dtype=object) == labels for name, pred in predicted.items()}
        stats = ctx.cfg.stats
        in_a = {r.id for r in ctx.records if r.split == "A"}
        rows = excluded_rows(self.name, Counter(reason for rid, reason in crops.excluded_ids.items() if rid in in_a))
        idx = bootstrap_indices(len(attacked), stats.n_bootstrap, stats.seed)
        rows += [bootstrap_mean(correct["original"], idx).row(self.name, "all", "recon_classifier_top1_originals"),
                 bootstrap_mean(correct["target-full"], idx).row(self.name, "all", "recon_acc_target_full_images")]
        rows += reconstruction_rows(self.name, correct["target"], correct["reference"],
                                    [r.is_canary for r in attacked], stats)
        if ctx.report_dir is not None:
            write_reconstruction_grid(Path(ctx.report_dir) / "reconstruction.png", attacked, crops, samples,
                                      originals, predicted, correct)
        return rows


def timed_samples(model, embeddings: Embeddings, what: str, progress: bool) -> np.ndarray:
    """Returns the uint8 NHWC samples of `model` from `embeddings`, logging how long they took."""
    start = time.perf_counter()
    pixels = to_uint8(sample(model, embeddings, progress=progress))
    log.info("sampled %d reconstructions (%s, %d DDIM steps) in %.1f s", len(embeddings), what,
             model.cfg.sampling_steps, time.perf_counter() - start)
    return pixels


def grid_order(ids: list[str], correct_target: np.ndarray, correct_reference: np.ndarray, n: int) -> list[int]:
    """Returns up to n positions: records the target's sample gets right and the reference's wrong first, by id.

    Example:
        >>> grid_order(["d", "c", "b", "a"], np.array([1, 1, 0, 1]), np.array([0, 1, 0, 0]), n=3)
        [3, 0, 2]
    """
    memorized = np.asarray(correct_target, dtype=bool) & ~np.asarray(correct_reference, dtype=bool)
    return sorted(range(len(ids)), key=lambda i: (not memorized[i], ids[i]))[:n]


def write_reconstruction_grid(path: Path, attacked: RecordSet, crops: CropResult, samples: dict[str, np.ndarray],
                              originals: np.ndarray, predicted: dict[str, list[str]],
                              correct: dict[str, np.ndarray]) -> Path:
    """Returns `path` after drawing crop | target sample | reference sample | original for up to 8 A records.

    Each sample is titled with the classifier's label for it (`predicted`); the records whose target
    sample it names right and reference sample wrong (`correct`) come first.
    """
    rows = grid_order(attacked.ids, correct["target"], correct["reference"], GRID_ROWS)
    fig = Figure(figsize=(6, 1.6 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for ax_row, i in zip(axes, rows, strict=True):
        record = attacked[i]
        panels = ((crop_image(record, crops.crops[record.id]), f"{record.id}\ncrop; true: {record.label}"),
                  (samples["target"][i], f"target sample\nseen as {predicted['target'][i]}"),
                  (samples["reference"][i], f"reference sample\nseen as {predicted['reference'][i]}"),
                  (originals[i], f"original\nseen as {predicted['original'][i]}"))
        for ax, (image, title) in zip(ax_row, panels, strict=True):
            ax.imshow(image)
            ax.set_title(title, fontsize=6)
            ax.set_axis_off()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    log.info("wrote %d reconstructions to %s", len(rows), path)
    return path
