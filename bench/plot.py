"""Trade-off plots from the results table: memorization against utility, and against strength.

Memorization defaults to the canary déjà vu gap at 20% (`dv_gap@20` of test
`image-two-model`, falling back to subset `all` for a recipe without canaries); utility is
the zero-shot top-1 where a recipe has it (CLIP), else the linear-probe top-1 (test
`utility`, subset `all`). Several seeds of one (recipe, mitigation, strength) become one
point: the mean value, with the envelope of the seeds' 95% intervals as its error bar.
A one-model test is drawn with its null-corrected gap (`corrected_<metric>`), the one comparable
with a two-model gap. Missing metrics skip a panel with a logged reason instead of failing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure  # the object API needs no pyplot state and no GUI backend

from dejavu.results import ONE_MODEL_TESTS
from mitigations.registry import BASELINE

log = logging.getLogger(__name__)

UTILITY_TEST = "utility"
#: utility metrics by preference; each recipe uses the first it has
UTILITY_METRICS = ("zero_shot_top1", "linear_probe_top1")
GROUP = ["recipe", "mitigation", "strength"]


@dataclass(frozen=True)
class MetricChoice:
    """Which rows measure memorization: a test, a metric, and subsets by preference."""

    test: str = "image-two-model"
    metric: str = "dv_gap@20"
    subsets: tuple[str, ...] = ("canary", "all")


def comparable_choice(table: pd.DataFrame, choice: MetricChoice) -> MetricChoice:
    """Returns the memorization rows to draw: for a one-model test, its null-corrected gap if the table has it.

    A one-model gap mixes memorization with the estimator being a different predictor from the
    target; subtracting its null on the eval records leaves what is comparable with a two-model gap.
    """
    if choice.test not in ONE_MODEL_TESTS or choice.metric.startswith(("corrected_", "null_")):
        return choice
    corrected = f"corrected_{choice.metric}"
    if ((table["test"] == choice.test) & (table["metric"] == corrected)).any():
        log.info("%s is a one-model test: plotting %s, the gap minus its eval null", choice.test, corrected)
        return replace(choice, metric=corrected)
    log.warning("%s has no %s rows (measured before the one-model nulls?); plotting the raw %s, which is not "
                "comparable with a two-model gap", choice.test, corrected, choice.metric)
    return choice


def pareto_front(utility: Sequence[float], memorization: Sequence[float]) -> np.ndarray:
    """Returns a boolean mask of the points no other point beats (higher utility, lower memorization).

    A point is dominated when another has utility >= and memorization <= with one of them
    strict; equal points do not dominate each other. Points with a NaN are never on the front.
    """
    u, m = np.asarray(utility, dtype=float), np.asarray(memorization, dtype=float)
    valid = np.isfinite(u) & np.isfinite(m)
    front = np.zeros(len(u), dtype=bool)
    for i in np.flatnonzero(valid):
        beaten = valid & (u >= u[i]) & (m <= m[i]) & ((u > u[i]) | (m < m[i]))
        front[i] = not beaten.any()
    return front


def _per_run(table: pd.DataFrame, test: str, metrics: Sequence[str], subsets: Sequence[str],
             prefix: str) -> pd.DataFrame:
    """Returns one row per run: the first available (metric, subset) of each recipe, columns prefixed."""
    rows = table[(table["test"] == test) & table["metric"].isin(metrics) & table["subset"].isin(subsets)]
    picked = []
    for recipe, part in rows.groupby("recipe", sort=True):
        present = {(m, s) for m, s in zip(part["metric"], part["subset"], strict=True)}
        choice = next((m, s) for m in metrics for s in subsets if (m, s) in present)
        if choice[1] != subsets[0]:
            log.info("recipe %s has no %s rows of %s/%s; using subset %s", recipe, subsets[0], test,
                     choice[0], choice[1])
        picked.append(part[(part["metric"] == choice[0]) & (part["subset"] == choice[1])])
    if not picked:
        return pd.DataFrame(columns=["run_id", *GROUP] + [f"{prefix}{c}" for c in
                                                             ("", "_low", "_high", "_metric", "_subset")])
    out = pd.concat(picked).drop_duplicates("run_id", keep="last")
    return out[["run_id", *GROUP, "value", "ci_low", "ci_high", "metric", "subset"]].rename(columns={
        "value": prefix, "ci_low": f"{prefix}_low", "ci_high": f"{prefix}_high",
        "metric": f"{prefix}_metric", "subset": f"{prefix}_subset"})


def tradeoff_points(table: pd.DataFrame, memorization: MetricChoice = MetricChoice(),
                    utility_metrics: Sequence[str] = UTILITY_METRICS) -> pd.DataFrame:
    """Returns one row per (recipe, mitigation, strength): mem, util, their interval envelopes, runs, pareto."""
    mem = _per_run(table, memorization.test, [memorization.metric], memorization.subsets, "mem")
    util = _per_run(table, UTILITY_TEST, list(utility_metrics), ["all"], "util")
    runs = mem.merge(util.drop(columns=GROUP), on="run_id", how="left")
    aggregations = {"mem": "mean", "mem_low": "min", "mem_high": "max", "mem_metric": "first",
                    "mem_subset": "first", "util": "mean", "util_low": "min", "util_high": "max",
                    "util_metric": "first", "run_id": "count"}
    points = (runs.groupby(GROUP, dropna=False, sort=True).agg(aggregations)
              .rename(columns={"run_id": "runs"}).reset_index())
    points["pareto"] = False
    for _, idx in points.groupby("recipe").groups.items():
        points.loc[idx, "pareto"] = pareto_front(points.loc[idx, "util"], points.loc[idx, "mem"])
    return points


def mitigation_family(label: str) -> str:
    """Returns the mitigation label without its strength: "earlystop:val=0.5,patience=3" -> "earlystop:val,patience=3".

    A combination ("a=0.5+b=0.5") is its own family and keeps its strengths.
    """
    if "+" in label:
        return label
    head, comma, options = label.partition(",")
    return head.partition("=")[0] + (f",{options}" if comma else "")


def strength_curves(points: pd.DataFrame) -> pd.DataFrame:
    """Returns the single-mitigation points with a `family` column, plus the baseline at strength 0 per family."""
    single = points[(points["mitigation"] != BASELINE) & ~points["mitigation"].str.contains("+", regex=False)
                    & np.isfinite(points["strength"].astype(float))].copy()
    single["family"] = single["mitigation"].map(mitigation_family)
    baseline = points[points["mitigation"] == BASELINE]
    pinned = [baseline[baseline["recipe"] == recipe].assign(family=family, strength=0.0)
              for recipe, family in single[["recipe", "family"]].drop_duplicates().itertuples(index=False)]
    return pd.concat([single, *pinned], ignore_index=True).sort_values(["recipe", "family", "strength"])


def _error(center: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Returns matplotlib's 2xN asymmetric error array; a missing interval draws no bar."""
    return np.nan_to_num(np.vstack([center - low, high - center]).astype(float), nan=0.0).clip(min=0)


def _palette(families) -> dict[str, tuple]:
    """Returns one color per mitigation family, so a family looks the same in every panel."""
    names = sorted(set(families))
    return dict(zip(names, sns.color_palette("tab10", len(names)), strict=True))


def _panels(n: int, width: float = 5.0) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, 4.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _save(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1], metadata={"Date": None})  # no timestamp, so a re-plot diffs cleanly
    return paths


def plot_tradeoff(points: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Returns the written paths of the memorization-vs-utility figure, one panel per recipe."""
    fig = tradeoff_figure(points)
    return [] if fig is None else _save(fig, out_dir, "tradeoff")


def tradeoff_figure(points: pd.DataFrame, highlight: pd.Series | None = None) -> Figure | None:
    """Returns the memorization-vs-utility figure, one panel per recipe (None when no point has both).

    `highlight`, a boolean mask over `points`, stars those points (a run's own on its report page).
    """
    usable = points.dropna(subset=["mem", "util"])
    if usable.empty:
        log.warning("skipping the trade-off plot: no run has both memorization and utility rows")
        return None
    if len(usable) < len(points):
        log.warning("trade-off plot leaves out %d point(s) without utility", len(points) - len(usable))
    usable = usable.assign(family=usable["mitigation"].map(mitigation_family))
    palette = _palette(usable["family"])
    recipes = sorted(usable["recipe"].unique())
    fig, axes = _panels(len(recipes))
    for ax, recipe in zip(axes, recipes, strict=True):
        pts = usable[usable["recipe"] == recipe]
        ax.errorbar(pts["util"], pts["mem"], xerr=_error(pts["util"], pts["util_low"], pts["util_high"]),
                    yerr=_error(pts["mem"], pts["mem_low"], pts["mem_high"]), fmt="none", ecolor="0.6",
                    elinewidth=1, capsize=2, zorder=1)
        sns.scatterplot(data=pts, x="util", y="mem", hue="family", style="family", palette=palette, s=60,
                        ax=ax, zorder=2)
        # steps-pre traces the edge of the dominated region: between two front points the
        # best attainable memorization is that of the higher-utility one
        front = pts[pts["pareto"]].sort_values("util")
        ax.plot(front["util"], front["mem"], drawstyle="steps-pre", color="black", lw=1, ls="--",
                label="Pareto front", zorder=1)
        ax.scatter(front["util"], front["mem"], s=160, facecolors="none", edgecolors="black", zorder=3)
        for row in pts.itertuples():
            if np.isfinite(row.strength) and row.mitigation != BASELINE:
                ax.annotate(f"{row.strength:g}", (row.util, row.mem), xytext=(4, 4),
                            textcoords="offset points", fontsize=7)
        ax.set(title=recipe, xlabel=f"utility: {pts['util_metric'].iloc[0]} (higher is better)",
               ylabel=f"memorization: {pts['mem_metric'].iloc[0]} [{pts['mem_subset'].iloc[0]}] "
                      "(lower is better)")
        mask = pd.Series(False, index=pts.index) if highlight is None else highlight
        mine = pts[mask.reindex(pts.index, fill_value=False).to_numpy(bool)]
        if len(mine):
            ax.scatter(mine["util"], mine["mem"], s=380, marker="*", color="crimson", edgecolors="black",
                       linewidths=0.8, label="this run", zorder=4)
        ax.legend(fontsize=7, title=None)
    return fig


def plot_strength(points: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Returns the written paths of the memorization-vs-strength figure, one panel per recipe."""
    curves = strength_curves(points).dropna(subset=["mem"])
    if curves.empty:
        log.warning("skipping the strength plot: no single mitigation with a numeric strength")
        return []
    palette = _palette(curves["family"])
    recipes = sorted(curves["recipe"].unique())
    fig, axes = _panels(len(recipes))
    for ax, recipe in zip(axes, recipes, strict=True):
        pts = curves[curves["recipe"] == recipe]
        ax.errorbar(pts["strength"], pts["mem"], yerr=_error(pts["mem"], pts["mem_low"], pts["mem_high"]),
                    fmt="none", ecolor="0.6", elinewidth=1, capsize=2)
        sns.lineplot(data=pts, x="strength", y="mem", hue="family", style="family", palette=palette,
                     markers=True, dashes=False, errorbar=None, ax=ax)
        ax.set(title=recipe, xlabel="mitigation strength (0 = baseline)",
               ylabel=f"memorization: {pts['mem_metric'].iloc[0]} [{pts['mem_subset'].iloc[0]}]")
        ax.legend(fontsize=7, title=None)
    return _save(fig, out_dir, "strength")


def plot_results(table: pd.DataFrame, out_dir: str | Path, memorization: MetricChoice = MetricChoice(),
                 utility_metrics: Sequence[str] = UTILITY_METRICS) -> list[Path]:
    """Returns the PNG and SVG paths written to out_dir (none for a panel whose metrics are missing)."""
    needed = {"run_id", *GROUP, "test", "subset", "metric", "value", "ci_low", "ci_high"}
    if not needed <= set(table.columns):
        log.warning("skipping all plots: the results table lacks columns %s", sorted(needed - set(table.columns)))
        return []
    memorization = comparable_choice(table, memorization)
    points = tradeoff_points(table, memorization, utility_metrics)
    if points.empty:
        log.warning("skipping all plots: no %s/%s rows in subsets %s", memorization.test,
                    memorization.metric, list(memorization.subsets))
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return plot_tradeoff(points, out) + plot_strength(points, out)
