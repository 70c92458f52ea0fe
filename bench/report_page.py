"""A run's report page: one self-contained HTML file, `<out>/reports/<run_id>/report.html`, for an auditor.

It shows the run's configuration and package versions, every stored number with its 95% interval,
the most memorized records (`memorized.png`), the reconstructions where the run made some
(`reconstruction*.png`), and where the run sits on its recipe's trade-off plot. The page makes no
external request: the styles are inline and every image is a base64 data URI, so it reads the same
offline, archived or mailed. It is a view of the results table, so it can be redrawn at any time
(`python -m bench report RUN_ID`).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from bench.plot import MetricChoice, comparable_choice, tradeoff_figure, tradeoff_points
from bench.presets import Preset, load_preset
from bench.report import HEADLINE
from bench.store import ResultsStore
from dejavu.files import read_json, write_json, write_text
from dejavu.results import SUBSETS, TESTS

log = logging.getLogger(__name__)

PAGE = "report.html"
#: the resolved preset a run used, written beside the page (the results table records only the preset's name)
SETTINGS = "run_config.json"
GRID = "memorized.png"
#: what a reconstruction test leaves in the report folder; the page has that section only where they exist
RECONSTRUCTIONS = "reconstruction*.png"


def report_dir(out: Path, run_id: str) -> Path:
    """Returns the folder of a run's per-run outputs under the results folder `out`."""
    return Path(out) / "reports" / run_id


def find_run(table: pd.DataFrame, query: str, table_path: Path) -> str:
    """Returns the stored run id equal to `query`, or the only one it is a prefix of; KeyError otherwise."""
    ids = list(dict.fromkeys(table["run_id"]))
    if query in ids:
        return query
    matches = [run_id for run_id in ids if run_id.startswith(query)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise KeyError(f"run id prefix {query!r} matches {len(matches)} runs in {table_path} "
                       f"({', '.join(matches[:4])}{', ...' if len(matches) > 4 else ''}); give more of it")
    if not ids:
        raise KeyError(f"{table_path} holds no runs yet; `python -m bench run` adds one (or pass --out)")
    raise KeyError(f"no run {query!r} in {table_path}; run ids are its run_id column (the first field of each "
                   f"line) and the folder names in {table_path.parent / 'reports'}; the latest: "
                   f"{', '.join(reversed(ids[-3:]))}")


def run_settings(preset: Preset, recipe: str, *, data: str, mitigations: Sequence[str],
                 overrides: Sequence[str]) -> dict:
    """Returns what shaped a run beyond its table columns: the request and the recipe's resolved preset sections."""
    return {"recipe": recipe, "data": data, "mitigations": list(mitigations), "overrides": list(overrides),
            "preset": preset.name, "description": preset.description,
            "sections": preset.resolved(recipe)}


def stored_settings(folder: Path, preset: str, recipe: str) -> tuple[dict | None, str]:
    """Returns the run's settings and where they come from: the run's own record, else the preset as it is now."""
    if (folder / SETTINGS).is_file():
        try:
            return read_json(folder / SETTINGS), f"recorded by the run ({SETTINGS})"
        except ValueError as err:
            return None, f"not readable: {err}"
    try:
        now = load_preset(preset)
        return ({"preset": now.name, "description": now.description,
                 "sections": run_settings(now, recipe, data="", mitigations=(), overrides=())["sections"]},
                f"preset {preset!r} as it is now: this run recorded no {SETTINGS}, so any --set overrides "
                "it had are not shown")
    except (ValueError, OSError) as err:  # a preset file that moved, or a name no longer known
        return None, f"not recoverable: the run recorded no {SETTINGS}, and preset {preset!r} cannot be read ({err})"


def number(x: float) -> str:
    """Returns a table number as text: to 3 places, tiny ones in e-notation, a dash for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    x = float(x)
    return f"{x:.3f}" if x == 0 or abs(x) >= 0.001 else f"{x:.2e}"


def _cell(row) -> str:
    interval = "" if pd.isna(row.ci_low) else f' <span class="ci">[{number(row.ci_low)}, {number(row.ci_high)}]</span>'
    n = "" if pd.isna(row.n) else f' <span class="n">n={int(row.n)}</span>'
    return f'<td><span class="v">{number(row.value)}</span>{interval}{n}</td>'


def _ordered(values: Iterable[str], first: Sequence[str]) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in first if v in present] + [v for v in present if v not in first]


def numbers_table(rows: pd.DataFrame, label: Callable[[tuple], str]) -> str:
    """Returns an HTML table of `rows`, one line per (test, metric) in their stored order, a column per subset."""
    subsets = _ordered(rows["subset"], SUBSETS)
    cells = {(r.test, r.metric, r.subset): r for r in rows.itertuples()}
    head = "".join(f"<th>{escape(s)}</th>" for s in subsets)
    body = []
    for key in dict.fromkeys(zip(rows["test"], rows["metric"], strict=True)):
        tds = "".join(_cell(cells[(*key, s)]) if (*key, s) in cells else "<td></td>" for s in subsets)
        body.append(f"<tr><th>{escape(label(key))}</th>{tds}</tr>")
    return f'<table class="numbers"><tr><th></th>{head}</tr>{"".join(body)}</table>'


def _headline(rows: pd.DataFrame) -> str:
    # the terminal summary's lines, in its order (an inner merge keeps the left order)
    headline = pd.DataFrame(HEADLINE, columns=["test", "metric"]).merge(rows, on=["test", "metric"])
    if headline.empty:
        return ""
    return f"<section><h2>Headline</h2>{numbers_table(headline, lambda key: f'{key[0]} · {key[1]}')}</section>"


def _numbers_by_test(rows: pd.DataFrame) -> str:
    parts = []
    for test in _ordered(rows["test"], TESTS):
        part = rows[rows["test"] == test]
        count = part["metric"].nunique()
        parts.append(f'<details open><summary>{escape(test)} <span class="n">({count} metric{"s" * (count != 1)})'
                     f"</span></summary>{numbers_table(part, lambda key: key[1])}</details>")
    return "".join(parts)


def _kv_table(mapping: Mapping) -> str:
    def value(v) -> str:
        text = v if isinstance(v, str) else json.dumps(v)
        return f"<code>{escape(text)}</code>"
    return ('<table class="kv">' + "".join(f"<tr><th>{escape(str(k))}</th><td>{value(v)}</td></tr>"
                                             for k, v in mapping.items()) + "</table>")


def run_command(settings: dict, seed) -> str | None:
    """Returns the command line that repeats the run, when its settings recorded the request."""
    if settings.get("command"):  # recorded as typed (bench measure)
        return settings["command"]
    if "mitigations" not in settings:
        return None
    words = ["python -m bench run", f"--recipe {settings['recipe']}"]
    words += [f"--mitigation {m}" for m in settings["mitigations"]]
    words += [f"--data {settings['data']}", f"--preset {settings['preset']}", f"--seed {int(seed)}"]
    words += [f"--set {o}" for o in settings["overrides"]]
    return " ".join(words)


def _configuration(meta: pd.Series, folder: Path) -> str:
    fields = {k: meta[k] for k in ("run_id", "recipe", "mitigation", "strength", "seed", "preset", "dataset")}
    fields["wall time"] = f"{meta['wall_s']:g} s"
    settings, source = stored_settings(folder, str(meta["preset"]), str(meta["recipe"]))
    parts = [_kv_table({k: f"{v:g}" if isinstance(v, float) else str(v) for k, v in fields.items()})]
    command = settings and run_command(settings, meta["seed"])
    if command:
        parts.append(f"<p>Repeat it with <code>{escape(command)}</code></p>")
    parts.append(f'<h3>Preset content</h3><p class="note">{escape(source)}</p>')
    if settings:
        if settings.get("description"):
            parts.append(f"<p>{escape(settings['description'])}</p>")
        for name, section in settings.get("sections", {}).items():
            parts += _section_tables(name, section)
    return "".join(parts)


def _section_tables(name: str, section: Mapping) -> list[str]:
    """Returns a section's table; the measure section, nested by owner, gives one table per group or test."""
    if name != "measure" or "stats" not in section:  # (a run recorded before the nesting has a flat one)
        return [f"<h4>{escape(name)}</h4>{_kv_table(section)}"]
    flat = {k: v for k, v in section.items() if not isinstance(v, dict)}
    return ([f"<h4>{escape(name)}</h4>{_kv_table(flat)}"]
            + [f"<h4>{escape(f'{name}.{group}')}</h4>{_kv_table(values)}"
               for group, values in section.items() if isinstance(values, dict)])


def _versions(meta: pd.Series) -> str:
    try:
        versions = json.loads(meta["versions"])
    except (TypeError, ValueError):  # a hand-edited or older table: show what is there
        return f"<p><code>{escape(str(meta['versions']))}</code></p>"
    return _kv_table({k: "not installed" if v is None else v for k, v in versions.items()})


def data_uri(png: bytes) -> str:
    """Returns PNG bytes as a data URI, so the page carries the image rather than pointing at it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _image(png: bytes, alt: str) -> str:
    return f'<img src="{data_uri(png)}" alt="{escape(alt)}">'


def _tradeoff(table: pd.DataFrame, meta: pd.Series) -> str:
    choice = comparable_choice(table, MetricChoice())
    points = tradeoff_points(table, choice)
    points = points[points["recipe"] == meta["recipe"]]
    mine = ((points["mitigation"] == meta["mitigation"]) & points[["mem", "util"]].notna().all(axis=1)
            & np.isclose(points["strength"].astype(float), float(meta["strength"]), equal_nan=True))
    fig = tradeoff_figure(points, highlight=mine) if mine.any() else None
    if fig is None:
        return (f'<p class="note">Not drawn: this run has no {escape(choice.test)} {escape(choice.metric)} row with '
                "a utility row to plot it against.</p>")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    runs = int(points["runs"].sum())
    return (_image(buffer.getvalue(), f"trade-off of {meta['recipe']}") +
            f'<p class="note">Every {escape(str(meta["recipe"]))} run in the table ({runs}); one point per '
            "(mitigation, strength), seeds averaged, bars span their 95% intervals; the dashed line is the Pareto "
            "front. The star is this run's configuration (python -m bench plot draws every recipe).</p>")


def _memorized(folder: Path) -> str:
    if not (folder / GRID).is_file():
        return f'<p class="note">No {GRID} in this run\'s report folder: it ran no image test that draws one.</p>'
    return _image((folder / GRID).read_bytes(), "the most memorized records")


def _reconstructions(folder: Path) -> str:
    images = sorted(folder.glob(RECONSTRUCTIONS))
    if not images:
        return ""
    figures = "".join(f"<figure>{_image(p.read_bytes(), p.stem)}<figcaption>{escape(p.name)}</figcaption></figure>"
                      for p in images)
    return f"<section><h2>Reconstructions</h2>{figures}</section>"


STYLE = """
body { font-family: system-ui, "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1.5em; color: #1d2330; background: #fbfbfd; line-height: 1.45; }
h1 { font-size: 1.5em; border-bottom: 3px solid #3b5bdb; padding-bottom: .3em; }
h2 { font-size: 1.2em; margin-top: 2em; color: #243b8a; }
h3 { font-size: 1em; margin-top: 1.4em; }
h4 { font-size: .9em; margin: 1em 0 .2em; color: #555; }
table { border-collapse: collapse; font-size: .85em; margin: .4em 0 1em; background: #fff; }
th, td { border: 1px solid #d7dbe6; padding: .25em .6em; text-align: left; vertical-align: top; }
table.numbers tr:first-child th { background: #e8ecf8; }
p.facts { font-size: 1.05em; }
table.numbers td { font-variant-numeric: tabular-nums; white-space: nowrap; }
.v { font-weight: 600; }
.ci { color: #555; }
.n, .note { color: #777; font-size: .85em; }
code { font-size: .95em; word-break: break-all; }
details { margin: .6em 0; }
summary { font-weight: 600; cursor: pointer; }
img { max-width: 100%; border: 1px solid #d7dbe6; background: #fff; }
figure { margin: 1em 0; }
"""


def render_page(table: pd.DataFrame, run_id: str, folder: Path) -> str:
    """Returns the HTML page of `run_id` (stored in `table`) with the images found in its report `folder`."""
    rows = table[table["run_id"] == run_id]
    if rows.empty:
        raise KeyError(f"run {run_id!r} has no rows in the results table")
    meta = rows.iloc[0]
    title = f"run {run_id}: {meta['recipe']}, {meta['mitigation']}, seed {meta['seed']:g}"
    facts = (f"recipe <b>{escape(str(meta['recipe']))}</b> · mitigation <b>{escape(str(meta['mitigation']))}</b> "
             f"(strength {meta['strength']:g}) · seed {meta['seed']:g} · preset {escape(str(meta['preset']))} · "
             f"data {escape(str(meta['dataset']))} · {meta['wall_s']:g} s")
    body = [
        f"<h1>dejavu-bench {escape(title)}</h1>",
        f'<p class="facts">{facts}</p>',
        f'<p class="note">{len(rows)} rows of the results table; intervals are seeded bootstrap 95% intervals, '
        f"n the records behind each number.</p>",
        _headline(rows),
        f"<section><h2>Most memorized records</h2>{_memorized(folder)}</section>",
        _reconstructions(folder),
        f"<section><h2>Where it sits on the trade-off</h2>{_tradeoff(table, meta)}</section>",
        f"<section><h2>Every number</h2>{_numbers_by_test(rows)}</section>",
        f"<section><h2>Configuration</h2>{_configuration(meta, folder)}</section>",
        f"<section><h2>Package versions</h2>{_versions(meta)}</section>",
    ]
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def write_page(out: Path, run_id: str) -> Path:
    """Returns the path of the report page of `run_id` after writing it from `<out>/runs.csv`."""
    folder = report_dir(out, run_id)
    page = folder / PAGE
    write_text(page, render_page(ResultsStore(Path(out) / "runs.csv").read(), run_id, folder))
    return page


def write_after_run(out: Path, run_id: str, settings: Callable[[], dict]) -> Path | None:
    """Returns the page a finished run writes, or None after a warning: its rows are stored either way."""
    try:
        write_json(report_dir(out, run_id) / SETTINGS, settings())
        page = write_page(out, run_id)
    except Exception as err:  # a view of stored rows must never fail the run that stored them
        log.warning("run %s: its rows are stored, but its report page could not be written (%s: %s); "
                    "retry with `python -m bench report %s --out %s`", run_id, type(err).__name__, err, run_id, out)
        return None
    log.info("report page: %s", page)
    return page
