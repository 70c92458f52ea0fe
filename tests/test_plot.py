"""Trade-off plots: Pareto front, point aggregation, strength curves, robustness, the CLI."""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np
import pandas as pd
import pytest

from bench.commands import plot as plot_command
from bench.plot import (
    MetricChoice,
    comparable_choice,
    mitigation_family,
    pareto_front,
    plot_results,
    strength_curves,
    tradeoff_points,
)
from bench.store import ResultsStore
from dejavu.results import Row, to_frame

NAN = math.nan


def test_pareto_front_on_hand_worked_points():
    #          A     B     C     D     E     F (= B)  G (NaN)
    util = [0.50, 0.60, 0.40, 0.60, 0.30, 0.60, NAN]
    mem = [0.30, 0.20, 0.10, 0.25, 0.40, 0.20, 0.00]
    # B beats A, D (same utility, more memorization) and E; C has the least memorization;
    # B and F tie, and equal points do not dominate each other; G is unmeasured.
    assert pareto_front(util, mem).tolist() == [False, True, True, False, False, True, False]
    assert pareto_front([], []).tolist() == []


@pytest.mark.parametrize(("label", "family"), [
    ("crop=0.5", "crop"), ("textrand:shuffle=0.25", "textrand:shuffle"),
    ("earlystop:val=0.5,patience=3", "earlystop:val,patience=3"), ("guillotine=2", "guillotine"),
    ("guillotine,layer=backbone", "guillotine,layer=backbone"), ("crop=0.5+earlystop=0.5", "crop=0.5+earlystop=0.5")])
def test_mitigation_family_drops_only_the_strength(label, family):
    assert mitigation_family(label) == family


def run_rows(recipe, mitigation, strength, seed, mem, utils, subset="canary"):
    """Returns the table rows of one synthetic run: a memorization row and utility rows."""
    rows = [] if mem is None else [Row("image-two-model", subset, "dv_gap@20", mem, mem - 0.05, mem + 0.05, 30),
                                   Row("image-two-model", subset, "dv_gap@5", 0.9, n=30)]
    rows += [Row("utility", "all", metric, value, value - 0.02, value + 0.02, 200) for metric, value in utils.items()]
    frame = to_frame(rows)
    return frame.assign(run_id=f"{recipe}-{mitigation}-{seed}", recipe=recipe, mitigation=mitigation,
                        strength=strength, seed=seed)


def synthetic_table():
    """Returns a results table with two recipes, several mitigations, seeds, and gaps."""
    lp = "linear_probe_top1"
    runs = [
        run_rows("vicreg", "none", 0.0, 0, 0.30, {lp: 0.60}),
        run_rows("vicreg", "none", 0.0, 1, 0.40, {lp: 0.62}),
        run_rows("vicreg", "crop=0.5", 0.5, 0, 0.20, {lp: 0.58}),
        run_rows("vicreg", "crop=0.8", 0.8, 0, 0.25, {lp: 0.50}),
        run_rows("vicreg", "earlystop:val=0.5,patience=3", 0.5, 0, 0.10, {lp: 0.40}),
        run_rows("vicreg", "crop=0.5+earlystop=0.5", NAN, 0, 0.05, {lp: 0.30}),
        run_rows("vicreg", "guillotine,layer=backbone", NAN, 0, 0.22, {lp: 0.55}),
        run_rows("vicreg", "earlystop=0.9", 0.9, 0, 0.02, {}),  # its utility is missing
        run_rows("vicreg", "none", 0.0, 2, None, {lp: 0.99}),  # its memorization is missing
        run_rows("clip", "none", 0.0, 0, 0.20, {lp: 0.90, "zero_shot_top1": 0.30}, subset="all"),
        run_rows("clip", "textrand=0.5", 0.5, 0, 0.10, {lp: 0.10, "zero_shot_top1": 0.28}, subset="all"),
    ]
    return pd.concat(runs, ignore_index=True)


def point(points, recipe, mitigation):
    (row,) = points[(points.recipe == recipe) & (points.mitigation == mitigation)].itertuples()
    return row


def test_tradeoff_points_average_seeds_and_pick_metrics_per_recipe():
    points = tradeoff_points(synthetic_table())
    base = point(points, "vicreg", "none")
    assert (base.runs, base.mem_subset, base.util_metric) == (2, "canary", "linear_probe_top1")
    assert (base.mem, base.mem_low, base.mem_high) == pytest.approx((0.35, 0.25, 0.45))
    assert (base.util, base.util_low, base.util_high) == pytest.approx((0.61, 0.58, 0.64))
    clip = point(points, "clip", "textrand=0.5")
    # no canary rows: falls back to `all`; zero-shot wins over the linear probe for CLIP
    assert (clip.mem_subset, clip.util_metric, clip.util) == ("all", "zero_shot_top1", pytest.approx(0.28))
    assert math.isnan(point(points, "vicreg", "earlystop=0.9").util)
    front = {(r.recipe, r.mitigation) for r in points[points.pareto].itertuples()}
    # crop=0.8 loses to crop=0.5 and guillotine (0.55, 0.22) to crop=0.5 (0.58, 0.20)
    assert front == {("vicreg", "none"), ("vicreg", "crop=0.5"), ("vicreg", "earlystop:val=0.5,patience=3"),
                     ("vicreg", "crop=0.5+earlystop=0.5"), ("clip", "none"), ("clip", "textrand=0.5")}


def test_strength_curves_pin_the_baseline_at_zero_and_leave_out_combinations():
    curves = strength_curves(tradeoff_points(synthetic_table()))
    got = {(r.recipe, r.family): [] for r in curves.itertuples()}
    for r in curves.itertuples():
        got[(r.recipe, r.family)].append((r.strength, round(r.mem, 6)))
    assert got == {("vicreg", "crop"): [(0.0, 0.35), (0.5, 0.2), (0.8, 0.25)],
                   ("vicreg", "earlystop"): [(0.0, 0.35), (0.9, 0.02)],
                   ("vicreg", "earlystop:val,patience=3"): [(0.0, 0.35), (0.5, 0.1)],
                   ("clip", "textrand"): [(0.0, 0.2), (0.5, 0.1)]}


def test_plot_results_writes_png_and_svg(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bench.plot"):
        paths = plot_results(synthetic_table(), tmp_path / "figs")
    assert [p.name for p in paths] == ["tradeoff.png", "tradeoff.svg", "strength.png", "strength.svg"]
    assert all(p.parent == tmp_path / "figs" for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_text().lstrip().startswith("<?xml")
    assert "Pareto front" in paths[1].read_text()
    assert "leaves out 1 point(s) without utility" in caplog.text


def test_missing_metrics_skip_panels_with_a_reason(tmp_path, caplog):
    table = synthetic_table()
    with caplog.at_level(logging.WARNING, logger="bench.plot"):
        only_utility = plot_results(table[table.test == "utility"], tmp_path / "a")
        no_utility = plot_results(table[table.test != "utility"], tmp_path / "b")
        other_metric = plot_results(table, tmp_path / "c", MetricChoice(metric="dv_gap@5"))
        broken = plot_results(table.drop(columns="strength"), tmp_path / "d")
    assert only_utility == [] and "no image-two-model/dv_gap@20 rows" in caplog.text
    assert [p.name for p in no_utility] == ["strength.png", "strength.svg"]
    assert "skipping the trade-off plot" in caplog.text
    assert len(other_metric) == 4  # the metric is configurable
    assert broken == [] and "lacks columns ['strength']" in caplog.text


def test_plot_command_reads_the_store_and_prints_paths(tmp_path, capsys):
    store = ResultsStore(tmp_path / "runs.csv")
    for run_id, part in synthetic_table().groupby("run_id", sort=False):
        first = part.iloc[0]
        store.append({"run_id": run_id, "recipe": first.recipe, "mitigation": first.mitigation,
                      "strength": first.strength, "seed": int(first.seed), "dataset": "scenes:x",
                      "preset": "tiny", "wall_s": 1.0}, part.drop(columns=["run_id", "recipe", "mitigation",
                                                                           "strength", "seed"]))
    parser = argparse.ArgumentParser(prog="bench")
    plot_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plot", "--results", str(store.path), "--out", str(tmp_path / "out"),
                              "--subset", "canary", "--subset", "all"])
    assert args.subsets == ["canary", "all"] and args.metric == "dv_gap@20"
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "out" / n) for n in ("tradeoff.png", "tradeoff.svg", "strength.png",
                                                            "strength.svg")]
    missing = parser.parse_args(["plot", "--results", str(tmp_path / "nope.csv")])
    assert missing.func(missing) == 2 and "no results table" in capsys.readouterr().err


def test_error_bars_never_go_negative_and_missing_intervals_draw_none():
    from bench.plot import _error
    err = _error(pd.Series([0.5, 0.5]), pd.Series([0.6, NAN]), pd.Series([0.7, 0.4]))
    assert np.allclose(err, [[0.0, 0.0], [0.2, 0.0]])


def test_plot_command_passes_the_utility_choice(tmp_path, monkeypatch):
    table = tmp_path / "runs.csv"
    table.write_text("run_id\n")
    seen = {}
    monkeypatch.setattr(plot_command, "plot_results",
                        lambda frame, out, choice, utility: seen.update(utility=utility) or [out / "x.png"])
    parser = argparse.ArgumentParser(prog="bench")
    plot_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plot", "--results", str(table), "--utility", "linear_probe_top1"])
    assert args.func(args) == 0 and seen["utility"] == ("linear_probe_top1",)
    # and the choice decides the x axis: CLIP's probe instead of its zero-shot accuracy
    clip = point(tradeoff_points(synthetic_table(), MetricChoice(subsets=("all",)), ("linear_probe_top1",)),
                 "clip", "textrand=0.5")
    assert (clip.util_metric, clip.util) == ("linear_probe_top1", pytest.approx(0.10))


def test_a_one_model_test_is_drawn_with_its_corrected_gap(caplog):
    table = to_frame([Row("vlm-one-model-text", "canary", "ppg", -0.1, n=9),
                      Row("vlm-one-model-text", "canary", "corrected_ppg", 0.2, n=19)])
    assert comparable_choice(table, MetricChoice("vlm-one-model-text", "ppg")).metric == "corrected_ppg"
    # already corrected, or a null, or a two-model test: drawn as asked
    for choice in (MetricChoice("vlm-one-model-text", "corrected_ppg"), MetricChoice("vlm-one-model-text", "null_ppg"),
                   MetricChoice("vlm-two-model", "ppg")):
        assert comparable_choice(table, choice) == choice
    # a table measured before the nulls: the raw gap, with a warning that it is not comparable
    with caplog.at_level(logging.WARNING):
        old = comparable_choice(table[table.metric == "ppg"], MetricChoice("vlm-one-model-text", "ppg"))
    assert old.metric == "ppg" and "not comparable" in caplog.text
