"""Utility of a frozen encoder: linear probe and zero-shot accuracy (SPEC section 7).

The linear probe trains one `nn.Linear` on frozen embeddings with Lightning and scores top-1 on
eval with torchmetrics. Zero-shot builds open_clip's class classifier (mean of normalized text
embeddings over prompt templates) from any vision-language Encoder's `embed_texts`, and scores
top-1/top-5 with torchmetrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from torchmetrics.functional.classification import multiclass_accuracy

from dejavu.embed import embed_captions
from dejavu.encoders import Encoder
from dejavu.supervised import predict_logits, train_classifier

#: prompts for the embedded scenes benchmark, whose classes are emoji drawn into scenes
SCENES_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an emoji of a {}.",
    "a drawing of a {}.",
    "a scene with a {}.",
)
#: the 80 prompts of CLIP's ImageNet evaluation, as open_clip ships them
IMAGENET_TEMPLATES = OPENAI_IMAGENET_TEMPLATES
#: classes whose prompts go through one `embed_texts` call: open_clip's `build_zero_shot_classifier`
#: batches 10, and the same batches keep its float sums (so the numbers) bit for bit
CLASSES_PER_TEXT_BATCH = 10

Labels = Sequence[str] | Sequence[int] | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ProbeResult:
    """Linear-probe top-1 on eval; `n_eval_unseen` eval items had a label absent from train."""

    top1: float
    classes: tuple[str, ...]
    n_train: int
    n_eval: int
    n_eval_unseen: int = 0
    correct: np.ndarray | None = field(default=None, compare=False)  # bool per eval item, for the interval


@dataclass(frozen=True)
class ZeroShotResult:
    """Zero-shot top-1 and top-k accuracy on n eval images; `top5_k` = min(5, number of classes)."""

    top1: float
    top5: float
    n: int
    top5_k: int = 5
    correct_top1: np.ndarray | None = field(default=None, compare=False)  # bool per eval image, for intervals
    correct_top5: np.ndarray | None = field(default=None, compare=False)


def _label_list(labels: Labels) -> list[str]:
    """Returns labels as strings, so int and str labels share one class vocabulary."""
    if isinstance(labels, torch.Tensor):
        labels = labels.tolist()
    return [str(v.item() if isinstance(v, np.generic) else v) for v in labels]


def linear_probe(
    train_x: torch.Tensor,
    train_y: Labels,
    eval_x: torch.Tensor,
    eval_y: Labels,
    *,
    epochs: int = 50,
    lr: float = 1e-2,
    batch_size: int = 256,
    seed: int = 0,
    weight_decay: float = 0.0,
    enable_progress_bar: bool = False,
) -> ProbeResult:
    """Returns the top-1 accuracy on eval of one linear layer trained on frozen train embeddings.

    Features are standardized with the train mean and standard deviation (a zero deviation
    counts as 1), applied to both splits, so one learning rate suits every layer's scale. An eval
    label never seen in train can never be predicted: such items count as wrong and are reported
    in `n_eval_unseen`.
    """
    train_labels, eval_labels = _label_list(train_y), _label_list(eval_y)
    if len(train_x) != len(train_labels) or len(eval_x) != len(eval_labels):
        raise ValueError(
            f"embeddings and labels differ in length: train {len(train_x)} vs {len(train_labels)}, "
            f"eval {len(eval_x)} vs {len(eval_labels)}"
        )
    if len(train_labels) == 0 or len(eval_labels) == 0:
        raise ValueError("the linear probe needs at least one train and one eval embedding")
    classes = sorted(set(train_labels))
    index = {c: j for j, c in enumerate(classes)}
    unseen = len(classes)  # an extra target no logit can win: unseen eval labels are always wrong

    train_x, eval_x = train_x.detach().float().cpu(), eval_x.detach().float().cpu()
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False)
    std = torch.where(std > 0, std, torch.ones_like(std))
    train_z, eval_z = (train_x - mean) / std, (eval_x - mean) / std

    module = train_classifier(
        lambda: nn.Linear(train_x.shape[1], len(classes)),
        TensorDataset(train_z, torch.tensor([index[c] for c in train_labels])),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        weight_decay=weight_decay,
        enable_progress_bar=enable_progress_bar,
    )
    logits = predict_logits(module, TensorDataset(eval_z), batch_size=batch_size)
    target = torch.tensor([index.get(c, unseen) for c in eval_labels])
    logits = torch.cat([logits, torch.full((len(logits), 1), -torch.inf)], dim=1)
    top1 = multiclass_accuracy(logits, target, num_classes=len(classes) + 1, average="micro", top_k=1)
    return ProbeResult(
        top1=float(top1),
        classes=tuple(classes),
        n_train=len(train_labels),
        n_eval=len(eval_labels),
        n_eval_unseen=int((target == unseen).sum()),
        correct=top_k_correct(logits, target, 1),
    )


def zero_shot(
    encoder: Encoder,
    class_names: Sequence[str],
    templates: Sequence[str | Callable[[str], str]],
    eval_image_embeddings: torch.Tensor,
    eval_labels: Labels,
    *,
    cache_dir: Path | None = None,
) -> ZeroShotResult:
    """Returns zero-shot top-1 and top-5 accuracy of a vision-language encoder on eval image embeddings.

    `encoder` needs a text tower (`supports_text`); the classifier is `zero_shot_classifier`, image
    embeddings are L2-normalized and logits = image @ classifier. Labels are class names or indices
    into `class_names`. With fewer than 5 classes, top-5 is top-C (then trivially 1), and `top5_k`
    says which k ran. `cache_dir` caches the prompt embeddings.
    """
    if not encoder.supports_text:
        raise TypeError(f"zero-shot needs a vision-language encoder; {encoder!r} has no text tower")
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names):
        raise ValueError("zero-shot class names must be distinct")
    targets = _class_indices(eval_labels, class_names)
    if len(targets) != len(eval_image_embeddings):
        raise ValueError(f"{len(eval_image_embeddings)} image embeddings but {len(targets)} labels")
    if len(targets) == 0:
        raise ValueError("zero-shot needs at least one eval image")
    classifier = zero_shot_classifier(encoder, class_names, templates, cache_dir=cache_dir)
    logits = F.normalize(eval_image_embeddings.detach().float().cpu(), dim=-1) @ classifier
    num_classes = len(class_names)
    k = min(5, num_classes)
    top1 = multiclass_accuracy(logits, targets, num_classes=num_classes, average="micro", top_k=1)
    topk = multiclass_accuracy(logits, targets, num_classes=num_classes, average="micro", top_k=k)
    return ZeroShotResult(top1=float(top1), top5=float(topk), n=len(targets), top5_k=k,
                          correct_top1=top_k_correct(logits, targets, 1),
                          correct_top5=top_k_correct(logits, targets, k))


def zero_shot_classifier(encoder: Encoder, class_names: Sequence[str],
                         templates: Sequence[str | Callable[[str], str]], *,
                         cache_dir: Path | None = None) -> torch.Tensor:
    """Returns the [D, C] classifier of open_clip's `build_zero_shot_classifier`, through `embed_texts`.

    Column c is the mean of class c's L2-normalized prompt embeddings, renormalized. With
    `cache_dir`, the prompt embeddings are read from or written to the embedding cache.
    """
    if not templates:
        raise ValueError("zero-shot needs at least one prompt template")
    prompts = [t.format(c) if isinstance(t, str) else t(c) for c in class_names for t in templates]
    # positions, not prompts, are the ids: a template without "{}" repeats a prompt across classes
    texts = embed_captions(encoder, {str(i): p for i, p in enumerate(prompts)}, cache_dir=cache_dir,
                           batch_size=CLASSES_PER_TEXT_BATCH * len(templates), progress=False)
    per_class = texts.vectors.reshape(len(class_names), len(templates), -1).mean(dim=1)
    # contiguous, as open_clip's concatenated batches are, so the logits matmul runs the same kernel
    return (per_class / per_class.norm(dim=1, keepdim=True)).T.contiguous()


def top_k_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> np.ndarray:
    """Returns, per item, whether its target is among the k largest logits (torchmetrics' per-item rule)."""
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).numpy()


def _class_indices(labels: Labels, class_names: list[str]) -> torch.Tensor:
    """Returns the class index of each label (a class name or an index into class_names)."""
    if isinstance(labels, torch.Tensor | np.ndarray):
        labels = labels.tolist()
    index = {c: j for j, c in enumerate(class_names)}

    def lookup(v) -> int | None:
        if isinstance(v, str):
            return index.get(v)
        return int(v) if 0 <= int(v) < len(class_names) else None

    found = [lookup(v) for v in labels]
    bad = [v for v, j in zip(labels, found, strict=True) if j is None]
    if bad:
        raise ValueError(f"{len(bad)} eval labels are not zero-shot classes, e.g. {bad[:5]}; pass every class name")
    return torch.tensor(found, dtype=torch.long)


_WNID = re.compile(r"n\d{8}")


def imagenet_zero_shot_metadata(wnids: Iterable[str]) -> dict[str, str]:
    """Returns {wnid: class name} for the 1000 ImageNet-1k wnids, e.g. an ImageNet folder's subfolders.

    open_clip lists the class names in the standard class-index order, which is the sorted order of
    the 1000 wnids (the torchvision ImageFolder order of the train folder). So the wnids are sorted
    and matched to the names by position; that is valid only for exactly the 1000 ImageNet-1k wnids.
    """
    wnids = sorted(set(wnids))
    if len(wnids) != len(IMAGENET_CLASSNAMES):
        raise ValueError(
            f"ImageNet zero-shot needs the {len(IMAGENET_CLASSNAMES)} ImageNet-1k class folders, found "
            f"{len(wnids)}; point it at the train or val folder of ImageNet-1k"
        )
    odd = [w for w in wnids if not _WNID.fullmatch(w)]
    if odd:
        raise ValueError(f"folder names are not ImageNet wnids (nXXXXXXXX): {odd[:5]}")
    return dict(zip(wnids, IMAGENET_CLASSNAMES, strict=True))


def zero_shot_classes(labels: Iterable[str], templates: Sequence[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Returns ({label: class name}, prompt templates) for zero-shot on records with these labels.

    The 1000 ImageNet-1k wnids get open_clip's class names and its 80 ImageNet templates; any other
    labels are their own class names, with `templates`.
    """
    labels = sorted(set(labels))
    if len(labels) == len(IMAGENET_CLASSNAMES) and all(_WNID.fullmatch(label) for label in labels):
        return imagenet_zero_shot_metadata(labels), tuple(IMAGENET_TEMPLATES)
    return {label: label for label in labels}, tuple(templates)
