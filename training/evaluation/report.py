"""What people look at: picture grids, a self-contained HTML report, DVC plot files.

The report is one ``index.html`` with no external resource: the grids are inline
``data:`` PNGs, the loss curves and the checkpoint selection's scores by epoch inline SVG, so
it opens offline, from S3, or as an MLflow artifact alike.
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path

import torch

from ..layout import Evaluation
from .specs import METRICS

LOSS_GROUPS = {
    "Generator losses": ["loss_G", "loss_G_A", "loss_G_B", "loss_cycle_A", "loss_cycle_B",
                         "loss_idt_A", "loss_idt_B"],
    "Discriminator losses": ["loss_D_A", "loss_D_B"],
}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


# -- grids ----------------------------------------------------------------------------
def grid_tensor(columns: list[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Rows of images, one column per tensor (each N x C x H x W in [-1, 1]), white gaps."""
    from torchvision.utils import make_grid

    columns = [c.float().expand(-1, 3, -1, -1) if c.shape[1] == 1 else c.float() for c in columns]
    rows = torch.stack(columns, dim=1).flatten(0, 1)   # image i of every column, then image i + 1
    return make_grid(rows, nrow=len(columns), padding=pad, pad_value=1.0)


def png_bytes(image: torch.Tensor) -> bytes:
    from PIL import Image

    from ..data.transforms import to_uint8

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- training log -----------------------------------------------------------------------
def read_train_log(path: Path | None) -> dict[str, list[float]]:
    """Columns of the trainer's training log as float lists; {} when there is none."""
    if path is None or not Path(path).is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(math.nan)
    return columns


def svg_chart(title: str, x: list[float], series: dict[str, list[float]], width: int = 640,
              height: int = 280, x_label: str = "iteration", points: bool = False) -> str:
    """A line chart as inline SVG: polylines, min/max ticks, a legend; ``points`` also marks
    each value (a series of one value has no line to show)."""
    # the legend's column fits the longest name (11 px text: about 7 px a character)
    left, right, top, bottom = 56, max(150, 40 + 7 * max((len(n) for n in series), default=0)), 28, 32
    finite = [v for ys in series.values() for v in ys if math.isfinite(v)]
    if not x or not finite:
        return ""
    x0, x1 = min(x), max(x)
    y0, y1 = min(finite), max(finite)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pw, ph = width - left - right, height - top - bottom

    def sx(v):
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v):
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="{left}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for value, anchor_y in ((y0, top + ph), (y1, top)):
        parts.append(f'<text x="{left - 4}" y="{anchor_y + 4:.1f}" font-size="11" text-anchor="end">{value:.3g}</text>')
    for value, anchor_x in ((x0, left), (x1, left + pw)):
        parts.append(f'<text x="{anchor_x:.1f}" y="{top + ph + 16}" font-size="11" '
                     f'text-anchor="middle">{value:.0f}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" font-size="11" text-anchor="middle">'
                 f'{html.escape(x_label)}</text>')
    for k, (name, ys) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        line = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, ys) if math.isfinite(b))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}">'
                     f'<title>{html.escape(name)}</title></polyline>')
        if points:
            parts += [f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="3" fill="{colour}"/>'
                      for a, b in zip(x, ys) if math.isfinite(b)]
        ly = top + 12 + 16 * k
        parts.append(f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 28}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<text x="{left + pw + 32}" y="{ly}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def loss_charts(log: dict[str, list[float]]) -> list[str]:
    x = log.get("iteration", [])
    charts = []
    for title, names in LOSS_GROUPS.items():
        series = {n: log[n] for n in names if n in log}
        if series:
            chart = svg_chart(title, x, series)
            if chart:
                charts.append(chart)
    return charts


# -- DVC plot files ---------------------------------------------------------------------
def write_plots(files: Evaluation, metrics: dict, log: dict[str, list[float]]) -> list[Path]:
    """The loss curves (iteration + loss columns) and the metrics against their identity
    baselines (metric, checkpoint, identity; CSV and JSON) for ``dvc plots``."""
    files.plots.mkdir(parents=True, exist_ok=True)
    written = []
    loss_columns = [c for names in LOSS_GROUPS.values() for c in names if c in log]
    if log.get("iteration") and loss_columns:
        path = files.losses_plot
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["iteration", *loss_columns])
            for i, it in enumerate(log["iteration"]):
                writer.writerow([int(it), *[log[c][i] for c in loss_columns]])
        written.append(path)
    rows = [{"metric": name, "checkpoint": metrics[name], "identity": metrics.get(f"baseline_{name}")}
            for name in METRICS if isinstance(metrics.get(name), (int, float)) and f"baseline_{name}" in metrics]
    path = files.metrics_plot
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, ["metric", "checkpoint", "identity"])
        writer.writeheader()
        writer.writerows(rows)
    written.append(path)
    files.metrics_plot_json.write_text(json.dumps(rows, indent=1))
    written.append(files.metrics_plot_json)
    return written


# -- HTML -------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def metrics_table(metrics: dict) -> str:
    rows = ['<table id="metrics"><thead><tr><th>metric</th><th>checkpoint</th><th>identity baseline</th>'
            '<th>better</th><th>meaning</th></tr></thead><tbody>']
    for name, spec in METRICS.items():
        if name not in metrics:
            continue
        description, better = spec.meaning, spec.better or ""
        cls = "num" if not isinstance(metrics[name], str) else "text"
        rows.append(f'<tr><td><code>{name}</code></td><td class="{cls}">{_fmt(metrics[name])}</td>'
                    f'<td class="num">{_fmt(metrics.get(f"baseline_{name}"))}</td><td>{better}</td>'
                    f'<td>{html.escape(description)}</td></tr>')
    rows.append("</tbody></table>")
    return "".join(rows)


# -- the checkpoint selection ----------------------------------------------------------
def read_selection(path: str | Path) -> dict:
    """The select step's scores file (``Selection.scores``, local or object storage); a bad
    one is a UserError naming it."""
    from .. import storage
    from ..errors import UserError

    try:
        scores = json.loads(storage.read_bytes(path))
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(scores, dict) or "selected_epoch" not in scores or not isinstance(scores.get("epochs"), list):
        raise UserError(f"{path}: not a selection file (written by cyclegan select)")
    return scores


SELECTION_COLUMNS = ("kid_AtoB_mean", "kid_BtoA_mean", "domain_success_AtoB", "domain_success_BtoA", "score")


def selection_section(scores: dict | None) -> str:
    """Which checkpoint was evaluated and why: the scores of every kept epoch (``cyclegan select``)
    by epoch, as charts and a table with the chosen epoch marked; '' without a selection."""
    if not scores:
        return ""
    epoch, mode, metric = scores.get("selected_epoch"), scores.get("mode"), scores.get("metric")
    rows = [r for r in scores.get("epochs", []) if isinstance(r, dict) and "epoch" in r]
    if mode != "best" or not rows:
        return (f'<h2 id="selection">Checkpoint selection</h2><p id="selection-summary">The latest checkpoint '
                f'(epoch {_fmt(epoch)}) was evaluated: <code>evaluate.select</code> is {html.escape(str(mode))}, so '
                'no epoch was scored.</p>')
    validation = scores.get("validation", {})
    per_domain = validation.get("images_per_domain", {})
    x = [float(r["epoch"]) for r in rows]
    charts = []
    for title, names in (("Validation KID by epoch", ("kid_AtoB_mean", "kid_BtoA_mean")),
                         ("Validation domain success by epoch", ("domain_success_AtoB", "domain_success_BtoA"))):
        series = {n: [float(r.get(n, math.nan)) for r in rows] for n in names}
        charts.append(svg_chart(title, x, series, x_label="epoch", points=True))
    head = "".join(f"<th>{name}</th>" for name in SELECTION_COLUMNS)
    body = []
    for r in rows:
        chosen = r["epoch"] == epoch
        cells = "".join(f'<td class="num">{_fmt(r.get(name))}</td>' for name in SELECTION_COLUMNS)
        body.append(f'<tr{" class=selected" if chosen else ""}><td class="num">{r["epoch"]}</td>{cells}'
                    f'<td>{"&#10003; evaluated" if chosen else ""}</td></tr>')
    baseline = scores.get("baseline") or {}
    if baseline:
        cells = "".join(f'<td class="num">{_fmt(baseline.get(name))}</td>' for name in SELECTION_COLUMNS)
        body.append(f"<tr><td>untranslated</td>{cells}<td></td></tr>")
    what = {"kid": "the mean KID of both directions (lower is better)",
            "domain_success": "the mean domain success of both directions (higher is better)"}.get(metric, metric)
    return (f'<h2 id="selection">Checkpoint selection</h2>'
            f'<p id="selection-summary">Epoch {_fmt(epoch)} of {len(rows)} kept epochs was evaluated: the best by '
            f'{html.escape(str(what))} on a fixed validation subset of the training images '
            f'({html.escape(", ".join(f"{k} {v}" for k, v in per_domain.items()))} per domain, seed '
            f'{_fmt(validation.get("seed"))}), never the test split, so the test figures below are not '
            f'biased by the choice. The training images were seen in training: these scores rank epochs and are '
            f'not comparable with the test figures.</p>'
            + "".join(charts) +
            f'<table id="selection-scores"><thead><tr><th>epoch</th>{head}<th></th></tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.text { word-break: break-all; font-family: monospace; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { image-rendering: pixelated; border: 1px solid #ddd; }
.grids { display: flex; gap: 2em; flex-wrap: wrap; }
.grids figure { flex: 1 1 360px; max-width: 520px; margin: 0; }
.grids img { width: 100%; height: auto; }
code { font-size: 12px; }
tr.selected td { background: #e8f4e8; font-weight: bold; }
"""


def render_html(metrics: dict, grids: dict[str, bytes], charts: list[str], info: dict,
                selection: dict | None = None) -> str:
    """The whole report as one string; ``grids`` maps a direction to its PNG bytes, ``selection``
    is the checkpoint selection's scores (``Selection.scores``) when there is one."""
    figures = []
    for direction, data in grids.items():
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        figures.append(f'<figure><img id="grid-{direction}" src="{uri}" alt="{direction} grid">'
                       f'<figcaption>{direction}: input | translation | reconstruction</figcaption></figure>')
    info_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>{html.escape(str(v))}</code></td></tr>"
                        for k, v in info.items())
    curves = "".join(charts) or "<p>No training log was found, so there are no loss curves.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>CycleGAN evaluation</title><style>{STYLE}</style></head>
<body>
<h1>CycleGAN evaluation</h1>
<table>{info_rows}</table>
<h2>Translations</h2>
<div class="grids">{''.join(figures)}</div>
<h2>Metrics</h2>
<p>Each figure beside the identity map (no translation) measured the same way.</p>
{metrics_table(metrics)}
{selection_section(selection)}
<h2>Training losses</h2>
{curves}
</body></html>
"""
