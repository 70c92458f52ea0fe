"""Mitigation plugins and registry: what each one changes in a TrainingPlan, parsing, plugins."""

from __future__ import annotations

import logging
import math
import pickle
import sys
import types
from importlib import metadata
from typing import ClassVar

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigations import registry
from mitigations.base import Mitigation, MitigationError, TrainingPlan
from mitigations.crop import StrongerCrop
from mitigations.earlystop import EarlyStop
from mitigations.guillotine import Guillotine
from mitigations.registry import apply_mitigations, describe, parse_mitigation, parse_mitigations
from mitigations.textrand import DropWords, MaskWords, ShuffleWords, TextRandomization

VICREG = TrainingPlan(recipe="vicreg", modality="image", max_epochs=10)
CLIP = TrainingPlan(recipe="clip", modality="image-text", max_epochs=10)


class FixedDraws:
    """A stand-in generator whose uniform draws and permutation are given by hand."""

    def __init__(self, draws, order=None):
        self.draws, self.order = np.asarray(draws, dtype=float), order

    def random(self, n):
        assert n == len(self.draws)
        return self.draws

    def permutation(self, picked):
        assert sorted(self.order) == list(picked)
        return np.asarray(self.order)


# --- textrand -----------------------------------------------------------------------------

def test_mask_replaces_the_words_drawn_below_the_rate():
    assert MaskWords(0.5)("a dog ball", FixedDraws([0.1, 0.9, 0.4])) == "_ dog _"
    assert MaskWords(0.5, "<unk>")("a dog", FixedDraws([0.5, 0.49])) == "a <unk>"


def test_shuffle_permutes_only_the_drawn_words_among_their_positions():
    # words 0, 2, 3 are drawn; the permutation sends positions 0, 2, 3 the words 3, 0, 2
    assert ShuffleWords(0.5)("a b c d", FixedDraws([0.1, 0.9, 0.2, 0.3], order=[3, 0, 2])) == "d b a c"


def test_drop_removes_the_drawn_words():
    assert DropWords(0.5)("a b c", FixedDraws([0.1, 0.9, 0.6])) == "b c"
    assert DropWords(1.0)("a b c", np.random.default_rng(0)) == ""


@settings(max_examples=50, deadline=None)
@given(words=st.lists(st.sampled_from(["a", "red", "dog", "on", "grass"]), max_size=12),
       rate=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_transforms_keep_their_invariants(words, rate, seed):
    caption = " ".join(words)
    masked = MaskWords(rate)(caption, np.random.default_rng(seed)).split()
    assert len(masked) == len(words) and all(m in (w, "_") for m, w in zip(masked, words, strict=True))
    assert sorted(ShuffleWords(rate)(caption, np.random.default_rng(seed)).split()) == sorted(words)
    kept = iter(words)  # dropping leaves a subsequence
    assert all(w in kept for w in DropWords(rate)(caption, np.random.default_rng(seed)).split())
    for t in (MaskWords(0.0), ShuffleWords(0.0), DropWords(0.0)):
        assert t(caption, np.random.default_rng(seed)) == caption


@pytest.mark.parametrize("variant", ["mask", "shuffle", "drop"])
def test_transform_is_picklable_and_deterministic_given_the_generator(variant):
    t = TextRandomization(0.5, {"variant": variant}).transform()
    caption = "a small brown dog runs on the green grass near a red ball"
    u = pickle.loads(pickle.dumps(t))
    assert u == t
    assert t(caption, np.random.default_rng(7)) == u(caption, np.random.default_rng(7))
    outputs = {t(caption, np.random.default_rng(s)) for s in range(20)}
    assert len(outputs) > 1  # the randomization does depend on the generator


def test_textrand_adds_a_caption_transform_and_changes_the_training_key():
    plan = TextRandomization(0.3, {"variant": "drop"})(CLIP)
    assert plan.caption_transforms == (DropWords(0.3),)
    assert plan.applied == ("textrand:drop=0.3",)
    assert plan.training_key() != CLIP.training_key()
    assert (plan.max_epochs, plan.crop_scale, plan.measure_layer) == (10, (0.2, 1.0), "projector")


def test_textrand_on_an_image_only_recipe_is_a_clear_error():
    with pytest.raises(MitigationError, match=r"textrand does not apply to recipe 'vicreg'"):
        TextRandomization(0.5)(VICREG)


def test_textrand_rejects_unknown_variant_and_option():
    with pytest.raises(MitigationError, match="unknown variant 'swap'"):
        TextRandomization(0.5, {"variant": "swap"})
    with pytest.raises(MitigationError, match=r"unknown option\(s\) \['rate'\]"):
        TextRandomization(0.5, {"rate": "1"})


# --- crop ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("base", "strength", "expected"), [
    ((0.2, 1.0), 0.0, (0.2, 1.0)),
    ((0.2, 1.0), 0.5, (0.1, 1.0)),
    ((0.2, 1.0), 0.95, (0.02, 1.0)),  # 0.01 clamps at the 2% floor
    ((0.2, 1.0), 1.0, (0.02, 1.0)),
    ((0.08, 0.9), 0.25, (0.06, 0.9)),
    ((0.01, 1.0), 0.5, (0.01, 1.0)),  # a bound already below the floor is never raised
])
def test_crop_lowers_the_lower_scale_bound(base, strength, expected):
    plan = StrongerCrop(strength)(VICREG.with_changes(crop_scale=base))
    assert plan.crop_scale == pytest.approx(expected)
    assert plan.applied == (f"crop={strength:g}",)


def test_crop_changes_the_training_key_only_through_the_scale():
    plan = StrongerCrop(0.5)(VICREG)
    assert plan.training_key() == {**VICREG.training_key(), "crop_scale": [0.1, 1.0]}


# --- earlystop ----------------------------------------------------------------------------

@pytest.mark.parametrize(("epochs", "strength", "expected"),
                         [(10, 0.0, 10), (10, 0.5, 5), (10, 0.75, 3), (10, 0.99, 1), (1000, 0.95, 50)])
def test_earlystop_trains_the_uncut_fraction_of_epochs(epochs, strength, expected):
    plan = EarlyStop(strength)(VICREG.with_changes(max_epochs=epochs))
    assert plan.max_epochs == expected and plan.callbacks == ()


def test_earlystop_strength_one_is_out_of_range():
    with pytest.raises(MitigationError, match="must be below 1"):
        EarlyStop(1.0)


def test_earlystop_val_adds_an_early_stopping_callback():
    from lightning.pytorch.callbacks import EarlyStopping

    plan = EarlyStop(0.5, {"variant": "val"})(VICREG.with_changes(max_epochs=100))
    (stopper,) = plan.callbacks
    assert isinstance(stopper, EarlyStopping)
    assert (stopper.monitor, stopper.patience, plan.max_epochs) == ("val_loss", 5, 100)  # ceil(0.5*100/10)
    assert plan.training_key()["training_notes"] == ["earlystop:val monitor=val_loss patience=5"]
    explicit = EarlyStop(0.5, {"variant": "val", "patience": "2", "monitor": "val_acc"})(VICREG)
    assert (explicit.callbacks[0].monitor, explicit.callbacks[0].patience) == ("val_acc", 2)
    fresh = plan.fresh_callbacks()
    assert fresh[0] is not stopper and fresh[0].patience == 5


# --- guillotine ---------------------------------------------------------------------------

def test_guillotine_moves_the_measurement_layer_but_not_the_training_key():
    plan = Guillotine(2)(VICREG)
    assert plan.measure_layer == 2 and plan.training_key() == VICREG.training_key()
    assert Guillotine.affects_training is False
    named = Guillotine(1, {"layer": "backbone"})(CLIP)
    assert named.measure_layer == "backbone" and named.applied == ("guillotine,layer=backbone",)
    assert math.isnan(Guillotine(1, {"layer": "backbone"}).numeric_strength)


def test_guillotine_strength_is_a_whole_number():
    with pytest.raises(MitigationError, match="whole number"):
        Guillotine(1.5)
    with pytest.raises(MitigationError, match="outside"):
        Guillotine(-1)
    assert Guillotine(3.0).strength == 3 and isinstance(Guillotine(3.0).strength, int)


# --- the training key seam ----------------------------------------------------------------

class ThirdParty(Mitigation):
    """A plugin-style mitigation that changes the plan given to it and writes no training note."""

    name = "thirdparty"
    changes: ClassVar[dict] = {}

    def apply(self, plan):
        return plan.with_changes(**self.changes)


def third_party(affects_training, **changes):
    """Returns a ThirdParty instance with the given declaration, applying the given plan changes."""
    cls = type("Custom", (ThirdParty,), {"affects_training": affects_training, "changes": changes})
    return cls(0.5)


@pytest.mark.parametrize("changes", [{"crop_scale": (0.05, 1.0)}, {"max_epochs": 3},
                                     {"caption_transforms": (DropWords(0.1),)}, {}])
def test_a_training_mitigation_enters_the_training_key_without_writing_a_note(changes):
    plan = third_party(True, **changes)(CLIP)
    assert plan.training_key() != CLIP.training_key()
    assert plan.training_notes == ("thirdparty=0.5",)


def test_a_measurement_only_mitigation_that_leaves_training_alone_keeps_the_key():
    plan = third_party(False, measure_layer="backbone")(VICREG)
    assert plan.training_key() == VICREG.training_key() and plan.measure_layer == "backbone"


@pytest.mark.parametrize(("changes", "named"), [
    ({"crop_scale": (0.05, 1.0)}, "crop_scale"), ({"max_epochs": 3}, "max_epochs"),
    ({"training_notes": ("mine",)}, "training_notes"), ({"callbacks": (object(),)}, "callbacks"),
    ({"caption_transforms": (DropWords(0.1),)}, "caption_transforms")])
def test_a_measurement_only_mitigation_that_changes_training_is_refused(changes, named):
    with pytest.raises(MitigationError, match=rf"^thirdparty declares affects_training = False but changed "
                                              rf"{named}\b.*would be reused"):
        third_party(False, **changes)(CLIP)


def test_a_missing_note_is_refused_when_the_key_does_not_cover_the_change():
    silent = type("Silent", (ThirdParty,), {"changes": {"callbacks": (object(),)},
                                            "training_note": lambda self, plan: None})
    with pytest.raises(MitigationError, match=r"^thirdparty gives no training note but changed callbacks"):
        silent(0.5)(VICREG)


def test_builtin_notes_keep_the_keys_of_cached_models():
    assert TextRandomization(0.3)(CLIP).training_notes == ("textrand=0.3",)
    assert StrongerCrop(0.5)(CLIP).training_notes == EarlyStop(0.5)(CLIP).training_notes == ()
    plan = apply_mitigations(CLIP, parse_mitigations(["earlystop:val=0.5,patience=2+textrand:drop=0.2"]))
    assert plan.training_notes == ("earlystop:val monitor=val_loss patience=2", "textrand:drop=0.2")


# --- registry -----------------------------------------------------------------------------

def test_parse_spelling_variants_options_and_defaults():
    assert parse_mitigation("textrand") == TextRandomization(0.5)
    assert parse_mitigation("textrand:shuffle=0.25") == TextRandomization(0.25, {"variant": "shuffle"})
    assert parse_mitigation(" earlystop:val=0.5, patience=3") == EarlyStop(0.5, {"variant": "val",
                                                                                "patience": "3"})
    assert parse_mitigation("guillotine").strength == 1
    assert parse_mitigation("crop=1") == StrongerCrop(1.0)
    for spec in ("textrand:drop=0.2", "earlystop:val=0.5,monitor=val_acc", "guillotine,layer=backbone",
                 "crop=0.75"):
        assert parse_mitigation(spec).spec() == spec


def test_parse_errors_name_the_problem():
    with pytest.raises(MitigationError, match=r"unknown mitigation 'dropout'.*crop, earlystop, guillotine, "
                                              r"textrand"):
        parse_mitigation("dropout=0.1")
    with pytest.raises(MitigationError, match=r"strength 1.5 is outside \[0.0, 1.0\]"):
        parse_mitigation("crop=1.5")
    with pytest.raises(MitigationError, match="'high' in 'crop=high' is not a number"):
        parse_mitigation("crop=high")
    with pytest.raises(MitigationError, match="not KEY=VALUE"):
        parse_mitigation("earlystop:val=0.5,3")


def test_combinations_apply_in_order_and_describe():
    mits = parse_mitigations(["textrand:shuffle=0.5+earlystop=0.5", "guillotine"])
    plan = apply_mitigations(CLIP, mits)
    assert plan.applied == ("textrand:shuffle=0.5", "earlystop=0.5", "guillotine=1")
    assert (plan.max_epochs, plan.measure_layer, len(plan.caption_transforms)) == (5, 1, 1)
    label, strength = describe(mits)
    assert label == "textrand:shuffle=0.5+earlystop=0.5+guillotine=1" and math.isnan(strength)
    assert describe(parse_mitigations(["crop=0.25"])) == ("crop=0.25", 0.25)
    assert describe(parse_mitigations(["none"])) == ("none", 0.0) == describe([])
    assert apply_mitigations(VICREG, []) == VICREG
    with pytest.raises(MitigationError, match=r"\['crop'\] given more than once"):
        parse_mitigations(["crop=0.2+crop=0.4"])


class FakeMitigation(Mitigation):
    """A third-party mitigation: doubles the epochs."""

    name = "fake"
    default_strength = 1.0

    def apply(self, plan):
        return plan.with_changes(max_epochs=plan.max_epochs * 2)


def fake_entry_points(monkeypatch, *entries):
    """Makes importlib.metadata.entry_points list the given (name, value) plugins in our group."""
    module = types.ModuleType("fake_dejavu_plugin")
    module.FakeMitigation, module.NotAMitigation = FakeMitigation, object
    monkeypatch.setitem(sys.modules, "fake_dejavu_plugin", module)
    eps = metadata.EntryPoints(metadata.EntryPoint(name=n, value=v, group=registry.ENTRY_POINT_GROUP)
                               for n, v in entries)

    def entry_points(**params):
        assert params == {"group": registry.ENTRY_POINT_GROUP}
        return eps
    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_entry_point_plugins_are_found_and_usable(monkeypatch):
    fake_entry_points(monkeypatch, ("fake", "fake_dejavu_plugin:FakeMitigation"))
    assert registry.available()["fake"] is FakeMitigation
    plan = apply_mitigations(VICREG, parse_mitigations(["fake+crop=0.5"]))
    assert (plan.max_epochs, plan.applied) == (20, ("fake=1", "crop=0.5"))


def test_bad_plugins_are_skipped_with_a_logged_reason(monkeypatch, caplog):
    fake_entry_points(monkeypatch, ("broken", "fake_dejavu_plugin:Missing"),
                      ("odd", "fake_dejavu_plugin:NotAMitigation"),
                      ("crop", "fake_dejavu_plugin:FakeMitigation"))
    with caplog.at_level(logging.WARNING, logger="mitigations.registry"):
        known = registry.available()
    assert set(known) == set(registry.BUILTINS) and known["crop"] is StrongerCrop
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "skipping mitigation plugin 'broken' (fake_dejavu_plugin", "skipping mitigation plugin 'odd'",
        "skipping mitigation plugin 'crop'"]


def test_a_real_installed_distribution_registers_a_plugin(tmp_path, monkeypatch):
    (tmp_path / "tiny_dejavu_plugin.py").write_text(
        "from mitigations.base import Mitigation\n"
        "class Tiny(Mitigation):\n"
        "    name = 'tiny'\n"
        "    def apply(self, plan):\n"
        "        return plan.with_changes(max_epochs=1)\n")
    dist = tmp_path / "tiny_dejavu_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-dejavu-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\ntiny = tiny_dejavu_plugin:Tiny\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tiny_dejavu_plugin", raising=False)
    assert parse_mitigation("tiny=0.5")(VICREG).max_epochs == 1
