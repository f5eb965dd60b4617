"""Small helpers to show numbers and tables from the run in the book."""
from __future__ import annotations

from IPython.display import Markdown

__all__ = ["md_table", "melt", "glue_value", "glue_figure"]


def md_table(rows: list[dict], columns: dict[str, str], formats: dict[str, str] | None = None) -> Markdown:
    """A Markdown table for display or ``glue``.

    Parameters
    ----------
    rows : list of dict
    columns : dict
        ``{key: header}`` in display order.
    formats : dict, optional
        ``{key: format spec}``, e.g. ``{"rms": ".3f"}``.
    """
    formats = formats or {}

    def cell(text) -> str:  # a '|' inside a cell (|error|) would end it: escape it
        return str(text).replace("|", "\\|")

    head = "| " + " | ".join(cell(h) for h in columns.values()) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = []
    for r in rows:
        cells = []
        for k in columns:
            v = r.get(k, "")
            if isinstance(v, float) and v != v:  # NaN: not defined for this row
                cells.append("—")
            else:
                cells.append(format(v, formats[k]) if k in formats and v not in ("", None) else str(v))
        body.append("| " + " | ".join(cell(c) for c in cells) + " |")
    return Markdown("\n".join([head, sep, *body]))


def melt(rows: list[dict], keep: list[str], labels, fields: dict[str, str], names: dict | None = None,
         formats: dict | None = None) -> list[dict]:
    """Wide rows (one column per label and quantity) as long rows (one row per label), so that a
    table fits the text column.

    Parameters
    ----------
    rows : list of dict
    keep : list of str
        Keys repeated on every long row (e.g. the cluster's name).
    labels : iterable of str
        The labels, in row order; each long row gets ``label`` = ``names[label]`` (or the label).
    fields : dict
        ``{new key: old key template}``, with ``{k}`` for the label (e.g. ``{"cnn": "CNN_{k}_scatter"}``).
    formats : dict, optional
        ``{label: format spec}``: the fields of that label's rows written with it (K and dex need
        different digits in one column).
    """
    out = []
    for r in rows:
        for k in labels:
            d = {c: r.get(c) for c in keep}
            d["label"] = (names or {}).get(k, k)
            for new, tmpl in fields.items():
                v = r.get(tmpl.format(k=k))
                spec = (formats or {}).get(k)
                if spec and isinstance(v, (int, float)) and v == v:
                    v = format(v, spec)
                d[new] = v
            out.append(d)
    return out


def glue_value(name: str, value) -> None:
    """Glue a number or short text for ``{glue:text}`` (numpy scalars become Python numbers)."""
    import numpy as np
    from myst_nb import glue

    if isinstance(value, np.generic):
        value = value.item()
    glue(name, value, display=False)


def glue_figure(name: str, fig) -> None:
    """Glue a figure for ``{glue:figure}`` and close it, so it is not shown twice. Its text is
    made legible at the book's column width first (:func:`helpers.plots.make_legible`)."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    from .parallel import say
    from .plots import MIN_TEXT_PT, make_legible, overlapping_ticks, smallest_text_pt

    make_legible(fig)
    crowded, small = overlapping_ticks(fig), smallest_text_pt(fig)
    if crowded or small < MIN_TEXT_PT - 1e-6:  # for the terminal: what the check could not fix
        say(f"figure {name}: smallest text {small:.1f} pt at the column width, {crowded} crowded tick-label pairs")
    glue(name, fig, display=False)
    plt.close(fig)
