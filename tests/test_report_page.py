"""The per-run report page: its numbers, configuration, images, trade-off star, self-containment, and the CLI."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import report_page
from bench.cli import main
from bench.plot import tradeoff_figure, tradeoff_points
from bench.presets import load_preset
from bench.report_page import (
    SETTINGS,
    find_run,
    number,
    render_page,
    report_dir,
    run_settings,
    write_after_run,
    write_page,
)
from bench.screenshot import find_browser, screenshot
from bench.store import ResultsStore
from dejavu.results import Row, to_frame

RUN = "aaaa1111bbbb"  # the run whose page the tests read
VERSIONS = json.dumps({"torch": "9.9.9-test", "numpy": "8.8.8-test", "faiss-cpu": None})


def rows_of(mem: float, util: float, extra: bool = False):
    """Returns the rows of one synthetic SSL run: its canary gap, its utility and, if `extra`, more tests."""
    rows = [Row("image-two-model", "canary", "dv_gap@20", mem, mem - 0.3081, mem + 0.2468, 50),
            Row("image-two-model", "all", "dv_gap@20", 0.0512, -0.0377, 0.1499, 1039),
            Row("utility", "all", "linear_probe_top1", util, util - 0.03, util + 0.03, 1000)]
    if extra:
        rows += [Row("image-two-model", "all", "excluded_too-small", 3.0, n=3),
                 Row("image-two-model", "non-canary", "pvalue_dv_gap@20", 0.0004, n=989),
                 Row("image-one-model-nb", "canary", "agreement", 0.8771, 0.8, 0.95, 50)]
    return to_frame(rows)


def png_bytes(size: tuple[int, int], seed: int) -> bytes:
    """Returns a PNG of random colour blocks, so a rendering of it cannot look blank."""
    blocks = np.random.default_rng(seed).integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(blocks).resize(size, Image.NEAREST).save(buffer, format="PNG")
    return buffer.getvalue()


def store_run(results: Path, run_id: str, recipe: str, mitigation: str, strength: float, rows) -> None:
    """Appends one synthetic run (seed 0, preset smoke) to the results table in `results`."""
    ResultsStore(results / "runs.csv").append(
        {"run_id": run_id, "recipe": recipe, "mitigation": mitigation, "strength": strength, "seed": 0,
         "dataset": "scenes:0123abcd", "preset": "smoke", "wall_s": 12.5, "versions": VERSIONS}, rows)


@pytest.fixture
def results(tmp_path) -> Path:
    """Returns a results folder: three simclr runs (ours a baseline) and one clip run, with ours' grid."""
    store_run(tmp_path, RUN, "simclr", "none", 0.0, rows_of(0.4321, 0.47, extra=True))
    store_run(tmp_path, "aaaa2222cccc", "simclr", "crop=0.5", 0.5, rows_of(0.2, 0.45))
    store_run(tmp_path, "dddd3333eeee", "simclr", "earlystop=0.5", 0.5, rows_of(0.1, 0.35))
    store_run(tmp_path, "ffff4444aaaa", "clip", "none", 0.0, rows_of(0.3, 0.9))
    (report_dir(tmp_path, RUN) / "memorized.png").parent.mkdir(parents=True)
    (report_dir(tmp_path, RUN) / "memorized.png").write_bytes(png_bytes((96, 64), seed=1))
    return tmp_path


def page_of(results: Path, run_id: str = RUN) -> str:
    return render_page(ResultsStore(results / "runs.csv").read(), run_id, report_dir(results, run_id))


def embedded_images(html: str) -> list[bytes]:
    """Returns the decoded bytes of every <img> of the page; fails on one that is not a PNG data URI."""
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    prefix = "data:image/png;base64,"
    assert all(s.startswith(prefix) for s in sources), [s[:40] for s in sources]
    return [base64.b64decode(s[len(prefix):]) for s in sources]


def test_number_formats_fractions_and_tiny_values():
    assert [number(0.43214), number(-0.0377), number(0.0), number(1.0)] == ["0.432", "-0.038", "0.000", "1.000"]
    assert [number(-0.0004), number(float("nan")), number(None)] == ["-4.00e-04", "–", "–"]


def test_page_shows_every_number_of_the_run_with_its_interval(results):
    html = page_of(results)
    assert '<span class="v">0.432</span> <span class="ci">[0.124, 0.679]</span> <span class="n">n=50</span>' in html
    assert '<span class="v">0.051</span> <span class="ci">[-0.038, 0.150]</span> <span class="n">n=1039</span>' in html
    assert '<span class="v">0.470</span> <span class="ci">[0.440, 0.500]</span>' in html
    assert '<span class="v">3.000</span> <span class="n">n=3</span>' in html  # without an interval
    assert '<span class="v">4.00e-04</span>' in html and '<span class="v">0.877</span>' in html
    for test in ("image-two-model", "image-one-model-nb", "utility"):
        assert f"<summary>{test} " in html
    full = html[html.index("Every number"):]
    # subsets are columns, in their usual order, and the other runs' numbers stay off the page
    assert full.index("<th>all</th>") < full.index("<th>canary</th>") < full.index("<th>non-canary</th>")
    assert "0.200" not in html and "0.900" not in html


def test_page_shows_the_configuration_preset_and_versions(results):
    html = page_of(results)
    for text in ("aaaa1111bbbb", "simclr", "scenes:0123abcd", "12.5 s", "9.9.9-test", "8.8.8-test", "not installed"):
        assert text in html
    # no run_config.json: the preset's content as it is now, said to be so
    assert "preset &#x27;smoke&#x27; as it is now" in html
    epochs = load_preset("smoke").train_config("simclr").epochs
    assert f"<tr><th>epochs</th><td><code>{epochs}</code></td></tr>" in html
    assert "<tr><th>canary_repeat</th>" in html and "<tr><th>n_bootstrap</th>" in html
    assert "<h4>measure.stats</h4>" in html and "<h4>measure.image-two-model</h4>" in html  # nested by owner


def test_page_shows_the_settings_a_run_recorded(results):
    preset = load_preset("smoke", ["train.epochs=7"])
    settings = run_settings(preset, "simclr", data="scenes", mitigations=["crop=0.5"], overrides=["train.epochs=7"])
    (report_dir(results, RUN) / SETTINGS).write_text(json.dumps(settings))
    html = page_of(results)
    assert f"recorded by the run ({SETTINGS})" in html
    assert ("python -m bench run --recipe simclr --mitigation crop=0.5 --data scenes --preset smoke --seed 0 "
            "--set train.epochs=7") in html
    assert "<tr><th>epochs</th><td><code>7</code></td></tr>" in html


def test_page_makes_no_external_request_and_embeds_its_images(results):
    html = page_of(results)
    # every reference the browser could follow: src/href attributes, CSS url(), imports, scripts, links
    references = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', html) + re.findall(r"url\(([^)]*)\)", html)
    assert references and all(r.startswith("data:") for r in references), [r[:40] for r in references]
    assert not re.search(r"https?://|<script|<link|@import|<iframe|<object", html)
    images = embedded_images(html)
    assert (report_dir(results, RUN) / "memorized.png").read_bytes() in images
    trade_off = [Image.open(io.BytesIO(png)) for png in images]
    assert len(images) == 2 and all(im.format == "PNG" for im in trade_off)


def test_reconstruction_section_appears_only_when_the_run_has_reconstructions(results):
    assert "Reconstructions" not in page_of(results)
    grid = png_bytes((64, 32), seed=2)
    (report_dir(results, RUN) / "reconstructions.png").write_bytes(grid)
    html = page_of(results)
    assert "<h2>Reconstructions</h2>" in html and grid in embedded_images(html)


def test_a_run_without_a_grid_or_utility_says_so(results):
    store_run(results, "bbbb5555", "simclr", "crop=0.8", 0.8, rows_of(0.3, 0.4).iloc[:2])  # no utility row
    html = page_of(results, "bbbb5555")
    assert "No memorized.png" in html and "Not drawn: this run has no" in html
    assert embedded_images(html) == []


def test_the_trade_off_stars_only_the_runs_configuration(results):
    points = tradeoff_points(ResultsStore(results / "runs.csv").read())
    points = points[points.recipe == "simclr"]
    figure = tradeoff_figure(points, highlight=points.mitigation == "none")
    (starred,) = [c for c in figure.axes[0].collections if c.get_label() == "this run"]
    assert starred.get_offsets().tolist() == [[pytest.approx(0.47), pytest.approx(0.4321)]]
    plain = tradeoff_figure(points)
    assert not [c for c in plain.axes[0].collections if c.get_label() == "this run"]


def test_find_run_takes_an_id_or_a_unique_prefix(results):
    table, path = ResultsStore(results / "runs.csv").read(), results / "runs.csv"
    assert find_run(table, RUN, path) == RUN
    assert find_run(table, "aaaa1", path) == RUN
    with pytest.raises(KeyError, match="prefix 'aaaa' matches 2 runs"):
        find_run(table, "aaaa", path)
    with pytest.raises(KeyError, match=r"no run 'zzz' in .*runs.csv; run ids are its run_id column .*reports"):
        find_run(table, "zzz", path)
    with pytest.raises(KeyError, match="holds no runs yet"):
        find_run(table[:0], "zzz", path)


def test_report_command_writes_the_page_of_a_prefix(results, capsys):
    assert main(["report", "aaaa1", "--out", str(results)]) == 0
    page = report_dir(results, RUN) / "report.html"
    assert capsys.readouterr().out.strip() == str(page)
    assert "0.432" in page.read_text()


def test_report_command_names_how_to_find_run_ids(results, capsys):
    assert main(["report", "nosuchrun", "--out", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "run_id column" in err and str(results / "reports") in err


def test_a_run_writes_its_settings_and_page(results):
    settings = run_settings(load_preset("smoke"), "simclr", data="scenes", mitigations=[], overrides=[])
    page = write_after_run(results, RUN, lambda: settings)
    assert page == report_dir(results, RUN) / "report.html" and "recorded by the run" in page.read_text()
    assert json.loads((page.parent / SETTINGS).read_text())["recipe"] == "simclr"


def test_a_page_that_fails_to_render_leaves_the_stored_rows_and_warns(results, monkeypatch, caplog):
    before = (results / "runs.csv").read_bytes()

    def broken(*args):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(report_page, "render_page", broken)
    with caplog.at_level(logging.WARNING, logger="bench.report_page"):
        assert write_after_run(results, RUN, lambda: {}) is None
    assert "its rows are stored, but its report page could not be written (RuntimeError: matplotlib fell over)" \
        in caplog.text and f"python -m bench report {RUN}" in caplog.text
    assert (results / "runs.csv").read_bytes() == before
    assert not (report_dir(results, RUN) / "report.html").exists()


@pytest.mark.slow
@pytest.mark.skipif(find_browser() is None,
                    reason="no chromium on PATH (apt-get install -y chromium); the page's browser check needs it")
def test_the_page_renders_in_a_headless_browser(results):
    page = write_page(results, RUN)
    png = screenshot(page, page.with_suffix(".png"), size=(1024, 1400))
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape == (1400, 1024, 3)
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    # a blank (or error) page is one or two flat colours; this one has text, tables, a grid and a plot
    assert pixels.std() > 20 and len(colours) > 200, (pixels.std(), len(colours))
    # the header's rule (the page's own style) and the trade-off's star (the embedded plot) are on screen
    for colour, least in (((0x3B, 0x5B, 0xDB), 500), ((0xDC, 0x14, 0x3C), 50)):  # CSS blue, matplotlib crimson
        assert (np.abs(pixels.astype(int) - colour).sum(axis=2) < 30).sum() > least, colour
