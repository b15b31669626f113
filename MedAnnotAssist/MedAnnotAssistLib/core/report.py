"""``report.html``: the consensus of a case as one self-contained page (pictures embedded as PNG), readable
offline in any browser. Pictures are drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from .consensus import ADJUDICATE, ConsensusResult, StructureConsensus

READER_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.bad{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}
img{max-width:100%}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}.note{color:#666}
"""


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _display(slice2d: np.ndarray, direction) -> np.ndarray:
    """Radiological display of an axial (j, i) slice: anterior up, patient's right on the left."""
    if len(direction) == 9:
        if direction[4] < 0:
            slice2d = slice2d[::-1, :]
        if direction[0] < 0:
            slice2d = slice2d[:, ::-1]
    return slice2d


def _fmt(value, digits=3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–" if value is None or np.isnan(value) else "∞"
    return f"{value:.{digits}f}"


def _worst(item: StructureConsensus, key: str, highest: bool):
    values = [getattr(pair, key) for pair in item.pairwise]
    values = [v for v in values if v is not None and not np.isnan(v)]
    if not values:
        return None
    return max(values) if highest else min(values)


def _summary_table(result: ConsensusResult) -> str:
    rows = []
    for item in result.structures:
        css = "bad" if item.verdict == ADJUDICATE else "ok"
        rows.append(
            f"<tr><td class=l><a href='#{item.structure.id}'>{html.escape(item.structure.name)}</a></td>"
            f"<td class='l {css}'>{item.verdict}</td><td class=l>{html.escape(item.reason)}</td>"
            f"<td>{_fmt(item.consensus_volume_ml, 1)}</td><td>{_fmt(_worst(item, 'dice', False))}</td>"
            f"<td>{_fmt(_worst(item, 'hd95_mm', True), 2)}</td>"
            f"<td>{_fmt(_worst(item, 'surface_dice', False))}</td></tr>"
        )
    return (
        "<table><tr><th class=l>Structure</th><th class=l>Verdict</th><th class=l>Why</th><th>Consensus ml</th>"
        "<th>Worst Dice</th><th>Worst HD95 mm</th><th>Worst surface Dice</th></tr>" + "".join(rows) + "</table>"
    )


def _pair_table(item: StructureConsensus) -> str:
    rows = "".join(
        f"<tr><td class=l>{html.escape(p.a)}</td><td class=l>{html.escape(p.b)}</td><td>{_fmt(p.dice)}</td>"
        f"<td>{_fmt(p.jaccard)}</td><td>{_fmt(p.volume_diff_ml, 2)}</td><td>{_fmt(p.hd_mm, 2)}</td>"
        f"<td>{_fmt(p.hd95_mm, 2)}</td><td>{_fmt(p.assd_mm, 2)}</td><td>{_fmt(p.surface_dice)}</td></tr>"
        for p in item.pairwise
    )
    staple = "".join(
        f"<tr><td class=l>{html.escape(name)}</td><td>{_fmt(p)}</td><td>{_fmt(q, 5)}</td></tr>"
        for name, p, q in zip(item.readers, item.sensitivity, item.specificity, strict=False)
    )
    table = (
        "<table><tr><th class=l>Reader A</th><th class=l>Reader B</th><th>Dice</th><th>Jaccard</th>"
        f"<th>Vol B−A ml</th><th>HD mm</th><th>HD95 mm</th><th>ASSD mm</th><th>Surface Dice @{item.tolerance_mm:g} mm"
        f"</th></tr>{rows}</table>"
    )
    if staple:
        table += (
            "<table><tr><th class=l>Reader</th><th>STAPLE sensitivity</th><th>STAPLE specificity</th></tr>"
            f"{staple}</table>"
        )
    return table


def _matrix_figure(item: StructureConsensus) -> str | None:
    if len(item.readers) < 3:
        return None
    import matplotlib.pyplot as plt

    n = len(item.readers)
    figure, axes = plt.subplots(1, 2, figsize=(2.6 * n + 3, 0.9 * n + 1.6), layout="constrained")
    for axis, key, title, cmap in ((axes[0], "dice", "Dice", "viridis"), (axes[1], "hd95_mm", "HD95 (mm)", "magma_r")):
        matrix = np.full((n, n), np.nan)
        for pair in item.pairwise:
            i, j = item.readers.index(pair.a), item.readers.index(pair.b)
            matrix[i, j] = matrix[j, i] = getattr(pair, key)
        image = axis.imshow(np.where(np.isfinite(matrix), matrix, np.nan), cmap=cmap)
        for (i, j), value in np.ndenumerate(matrix):
            if i != j:
                axis.text(j, i, _fmt(value, 2), ha="center", va="center", fontsize=8,
                          bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
        axis.set_xticks(range(n), item.readers, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(n), item.readers, fontsize=8)
        axis.set_title(title)
        figure.colorbar(image, ax=axis, fraction=0.046)
    return _png(figure)


def _overlay_figure(result: ConsensusResult, item: StructureConsensus, image: np.ndarray | None) -> str | None:
    """The axial slice with the most disagreement: each reader's outline, then the consensus and the map."""
    if item.box is None or item.consensus is None or len(item.box) != 3:
        return None
    import matplotlib.pyplot as plt

    direction = result.readers[0].geometry.direction
    spacing = result.spacing
    per_slice = item.disagreement.sum(axis=(1, 2)) if item.disagreement.any() else item.consensus.sum(axis=(1, 2))
    local_k = int(np.argmax(per_slice))
    k = item.box[0].start + local_k
    panels = len(item.masks) + 2
    figure, axes = plt.subplots(1, panels, figsize=(2.6 * panels, 3.0))
    box2d = item.box[1:]
    shape = item.masks[0].shape[1:]
    background = None
    if image is not None:
        background = _display(np.clip(image[k][box2d], -160, 240), direction)
    aspect = spacing[1] / spacing[2]  # a voxel is drawn as tall as its j spacing and as wide as its i spacing
    colours = dict(zip(item.readers, READER_COLOURS * 4, strict=False))
    for axis, (name, mask) in zip(axes, [*zip(item.readers, item.masks, strict=True)], strict=False):
        _panel(axis, background, shape, aspect)
        _fill(axis, _display(mask[local_k], direction), colours[name], 0.35)
        _outline(axis, _display(mask[local_k], direction), colours[name], 1.0)
        axis.set_title(name, fontsize=9, color=colours[name])
    consensus_axis, map_axis = axes[-2], axes[-1]
    _panel(consensus_axis, background, shape, aspect)
    for name, mask in zip(item.readers, item.masks, strict=True):
        _outline(consensus_axis, _display(mask[local_k], direction), colours[name], 0.8)
    _fill(consensus_axis, _display(item.consensus[local_k], direction), "#ffd400", 0.45)
    consensus_axis.set_title(f"consensus ({result.fusion})", fontsize=9)
    _panel(map_axis, background, shape, aspect)
    values = np.ma.masked_equal(_display(item.disagreement[local_k], direction), 0)
    shown = map_axis.imshow(values, cmap="autumn_r", vmin=0, vmax=1, aspect=aspect)
    map_axis.set_title("disagreement", fontsize=9)
    figure.colorbar(shown, ax=map_axis, fraction=0.046)
    for axis in axes:
        # contour() autoscales with y pointing up; pin every panel to the image's frame: row 0 on top.
        axis.set_xlim(-0.5, shape[1] - 0.5)
        axis.set_ylim(shape[0] - 0.5, -0.5)
        axis.set_aspect(aspect)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{item.structure.name}: slice k = {k}", fontsize=10)
    return _png(figure)


def _panel(axis, background, shape, aspect) -> None:
    """The case image under a panel, or black where there is none, drawn with row 0 at the top."""
    if background is not None:
        axis.imshow(background, cmap="gray", aspect=aspect)
    else:
        axis.imshow(np.zeros(shape), cmap="gray", vmin=0, vmax=1, aspect=aspect)


def _fill(axis, mask: np.ndarray, colour: str, alpha: float) -> None:
    if mask.any():
        axis.contourf(mask.astype(float), levels=[0.5, 1.5], colors=[colour], alpha=alpha)


def _outline(axis, mask: np.ndarray, colour: str, width: float) -> None:
    if mask.any():
        axis.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=width)


def _overview_figure(result: ConsensusResult, image: np.ndarray | None) -> str | None:
    """Disagreement over the CT on the three axial slices with the most disagreement."""
    if result.disagreement.ndim != 3 or not result.disagreement.any():
        return None
    import matplotlib.pyplot as plt

    direction = result.readers[0].geometry.direction
    spacing = result.spacing
    per_slice = result.disagreement.sum(axis=(1, 2))
    slices = sorted(np.argsort(per_slice)[-3:][::-1].tolist())
    figure, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices), 4.0))
    for axis, k in zip(np.atleast_1d(axes), slices, strict=False):
        if image is not None:
            axis.imshow(_display(np.clip(image[k], -160, 240), direction), cmap="gray", aspect=spacing[1] / spacing[2])
        values = np.ma.masked_equal(_display(result.disagreement[k], direction), 0)
        shown = axis.imshow(values, cmap="autumn_r", vmin=0, vmax=1, alpha=0.85, aspect=spacing[1] / spacing[2])
        axis.set_title(f"slice k = {k}", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(shown, ax=axes, fraction=0.02, label="fraction of readers differing from the consensus")
    return _png(figure)


def write_report(path: str | Path, result: ConsensusResult, image: np.ndarray | None = None) -> Path:
    """Write the HTML report; ``image`` is the case's CT/MR as a (k, j, i) array on the readers' grid."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    summary = result.as_dict()["summary"]
    readers = ", ".join(html.escape(r.name) for r in result.readers)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Consensus report: {html.escape(result.protocol.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Consensus report</h1><p>Protocol <b>{html.escape(result.protocol.label)}</b>, "
        f"{len(result.readers)} readers ({readers}), fusion <b>{result.fusion}</b>, surface convention "
        f"<b>{result.convention}</b>. {summary['agreed']} of {summary['structures']} structures agreed; "
        f"computed in {summary['seconds']:.2f} s.</p>",
        _summary_table(result),
    ]
    overview = _overview_figure(result, image)
    if overview:
        parts.append(f"<h2>Where the readers disagree</h2><img src='{overview}' alt='disagreement map'>")
    for item in result.structures:
        parts.append(f"<h2 id='{item.structure.id}'>{html.escape(item.structure.name)}</h2>")
        parts.append(f"<p class='{'bad' if item.verdict == ADJUDICATE else 'ok'}'>{item.verdict}: ")
        parts.append(f"{html.escape(item.reason)}</p>")
        if item.missing_readers:
            parts.append(f"<p class=note>No segment from: {html.escape(', '.join(item.missing_readers))}.</p>")
        parts.append(_pair_table(item))
        for picture in (_matrix_figure(item), _overlay_figure(result, item, image)):
            if picture:
                parts.append(f"<img src='{picture}' alt='{html.escape(item.structure.name)}'>")
    parts.append(
        "<p class=note>Metrics: docs/consensus.md. Distances in mm on the image spacing; ∞ where one reader's "
        "mask is empty.</p></body></html>"
    )
    Path(path).write_text("\n".join(parts), encoding="utf-8")
    return Path(path)
