"""The caption tests (SPEC section 5): from a training caption, does the target retrieve its unmentioned objects?

Both work in the models' joint image-text space; the two-model test compares the target with a
reference CLIP trained on B, the one-model test with a text-only model (all-MiniLM-L6-v2).
"""

from __future__ import annotations

from dejavu.attacks.vlm import TEST, TEXT_TEST, VLMTestConfig, vlm_one_model_text, vlm_two_model
from dejavu.measurements.base import MeasureContext, MeasurementTest
from dejavu.results import Row


class CaptionTwoModelTest(MeasurementTest):
    """The target CLIP against a reference CLIP trained on B."""

    name = TEST
    Config = VLMTestConfig
    needs_text = True
    needs_reference_text = True

    def run(self, ctx: MeasureContext) -> list[Row]:
        models = ctx.models
        return vlm_two_model(models.target_vlm, models.reference_vlm, ctx.records, self.settings(ctx),
                             **ctx.embed_options)


class CaptionOneModelTextTest(MeasurementTest):
    """The target CLIP against a text-only sentence model: what the caption alone predicts.

    It retrieves as the two-model test does, so it reads that test's settings (`reads`).
    """

    name = TEXT_TEST
    reads = (TEST,)
    needs_text = True

    def run(self, ctx: MeasureContext) -> list[Row]:
        text_model = ctx.models.text_model
        if text_model is None:
            from dejavu.references import SentenceTextEncoder  # loads sentence-transformers only when needed

            text_model = SentenceTextEncoder()
        return vlm_one_model_text(ctx.models.target_vlm, text_model, ctx.records,
                                  ctx.cfg.settings_of(CaptionTwoModelTest), **ctx.embed_options)
