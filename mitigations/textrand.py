"""Text randomization: train CLIP on a randomized caption at every step.

Jayaraman, Guo, Chaudhuri. *Déjà Vu Memorization in Vision–Language Models*, NeurIPS 2024
(arXiv 2402.02103): randomizing the caption during training, masking tokens in particular,
gives the best memorization/utility trade-off of the mitigations studied.

Tokens here are the caption's whitespace-separated words, randomized before tokenization so
the transform is independent of the recipe's tokenizer. With rate r = strength:

- ``mask`` (default): each word is replaced, independently with probability r, by a mask
  token. open_clip's BPE tokenizer has no [MASK] token, and a literal "[MASK]" would encode
  as the real word "mask" between brackets; the default mask token is "_", one BPE token
  with no meaning of its own, which keeps the caption's length and word positions.
- ``shuffle``: each word is selected independently with probability r, and the selected
  words are permuted uniformly at random among their own positions; the others stay put
  (r = 1 shuffles the whole caption).
- ``drop``: each word is removed independently with probability r (the caption may become
  empty, which the tokenizer encodes as start and end tokens only).

Command line: ``textrand`` (mask, rate 0.5), ``textrand=0.3`` (mask), ``textrand:shuffle=0.5``, ``textrand:drop=0.5``,
``textrand=0.3,mask_token=<unk>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mitigations.base import Mitigation, TrainingPlan

DEFAULT_MASK_TOKEN = "_"


@dataclass(frozen=True)
class MaskWords:
    """Caption transform: replaces each word with `token` with probability `rate`."""

    rate: float
    token: str = DEFAULT_MASK_TOKEN

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        """Returns the caption with the drawn words masked."""
        words = caption.split()
        hit = rng.random(len(words)) < self.rate
        return " ".join(self.token if h else w for w, h in zip(words, hit, strict=True))


@dataclass(frozen=True)
class ShuffleWords:
    """Caption transform: permutes the words drawn with probability `rate` among their positions."""

    rate: float

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        """Returns the caption with the drawn words shuffled in place."""
        words = caption.split()
        picked = np.flatnonzero(rng.random(len(words)) < self.rate)
        moved = rng.permutation(picked)
        out = list(words)
        for dst, src in zip(picked, moved, strict=True):
            out[dst] = words[src]
        return " ".join(out)


@dataclass(frozen=True)
class DropWords:
    """Caption transform: removes each word with probability `rate`."""

    rate: float

    def __call__(self, caption: str, rng: np.random.Generator) -> str:
        """Returns the caption without the drawn words."""
        words = caption.split()
        keep = rng.random(len(words)) >= self.rate
        return " ".join(w for w, k in zip(words, keep, strict=True) if k)


class TextRandomization(Mitigation):
    """Adds a per-step caption randomization (mask, shuffle or drop at rate = strength)."""

    name = "textrand"
    strength_range = (0.0, 1.0)
    modalities = ("image-text",)
    default_strength = 0.5  # mid-range; sweep the rate to draw the trade-off curve
    variants = ("mask", "shuffle", "drop")
    option_names = ("mask_token",)

    def transform(self):
        """Returns the picklable caption transform this mitigation adds."""
        if self.variant == "mask":
            return MaskWords(self.strength, str(self.options.get("mask_token", DEFAULT_MASK_TOKEN)))
        return {"shuffle": ShuffleWords, "drop": DropWords}[self.variant](self.strength)

    def apply(self, plan: TrainingPlan) -> TrainingPlan:
        """Returns the plan with the caption transform appended (its spec() enters the training key)."""
        return plan.with_changes(caption_transforms=plan.caption_transforms + (self.transform(),))
