"""The summary a run prints: the headline numbers of every test, with their 95% intervals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

#: (test, metric) pairs worth a line in the summary, in reading order. One-model tests show their
#: null-corrected gap (gap - null on the eval records) and the null: only the corrected gap is
#: comparable with a two-model gap (docs/METHODS.md, "Nulls of the one-model tests").
HEADLINE = [
    ("image-two-model", "dv_gap@5"), ("image-two-model", "dv_gap@20"), ("image-two-model", "dv_gap@100"),
    ("image-two-model", "memorized"), ("image-two-model", "misrepresented"),
    ("image-two-model", "pvalue_dv_gap@20"), ("image-two-model", "canary_auroc"),
    ("image-two-model", "canary_auroc@llr"),
    ("image-one-model-nb", "corrected_dv_gap@20"), ("image-one-model-nb", "null_dv_gap@20"),
    ("image-one-model-nb", "agreement"),
    ("image-one-model-crop", "corrected_dv_gap@20"), ("image-one-model-crop", "null_dv_gap@20"),
    ("image-one-model-crop", "agreement"),
    ("vlm-two-model", "ppg"), ("vlm-two-model", "prg"), ("vlm-two-model", "aucg"),
    ("vlm-two-model", "null_ppg"), ("vlm-two-model", "null_aucg"), ("vlm-two-model", "corrected_ppg"),
    ("vlm-two-model", "pvalue_ppg"), ("vlm-two-model", "canary_auroc"), ("vlm-two-model", "canary_auroc@llr"),
    ("vlm-one-model-text", "corrected_ppg"), ("vlm-one-model-text", "null_ppg"),
    ("vlm-one-model-text", "corrected_ppg_t2t"), ("vlm-one-model-text", "null_ppg_t2t"),
    ("utility", "linear_probe_top1"), ("utility", "zero_shot_top1"), ("utility", "zero_shot_top5"),
]


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Returns the headline rows, one line per (test, metric), with a column per subset."""
    keep = rows.set_index(["test", "metric"]).index.isin(HEADLINE)
    picked = rows[keep].copy()
    if picked.empty:
        return picked

    def cell(r) -> str:
        if pd.isna(r.ci_low):
            return f"{r.value:+.3f}"
        return f"{r.value:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"

    picked["cell"] = picked.apply(cell, axis=1)
    table = picked.pivot_table(index=["test", "metric"], columns="subset", values="cell", aggfunc="first")
    order = {k: i for i, k in enumerate(HEADLINE)}
    table = table.iloc[sorted(range(len(table)), key=lambda i: order[table.index[i]])]
    return table[[c for c in ("all", "canary", "non-canary") if c in table.columns]].fillna("")


def print_summary(rows: pd.DataFrame, table_path: Path) -> None:
    """Prints the headline numbers of a run and where the full table is."""
    first = rows.iloc[0]
    print(f"\nrun {first.run_id}: recipe={first.recipe} mitigation={first.mitigation} strength={first.strength} "
          f"seed={first.seed} preset={first.preset}  ({first.wall_s:.0f} s)")
    with pd.option_context("display.width", 200, "display.max_colwidth", 40, "display.max_rows", 100):
        print(summary_table(rows).to_string())
    print(f"\n{len(rows)} rows appended to {table_path}")
    reports = table_path.parent / "reports" / str(first.run_id)
    if reports.is_dir():
        print(f"per-record outcomes and the most memorized records: {reports}/")
