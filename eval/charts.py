"""Report figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from recdata.io import write_bytes


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed: the report is written without its figures."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ChartsUnavailable("matplotlib is not installed") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    # A fixed creation date keeps the PNG bytes reproducible.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    return write_bytes(path, buf.getvalue())


def grouped_bars(
    *,
    path: Path,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    errors: Mapping[str, Sequence[Sequence[float] | None]] | None = None,
    ylabel: str,
    title: str,
) -> Path:
    """One group of bars per entry of ``groups``, one bar per series; None values are left out.

    ``errors[name][i]`` is a ``[low, high]`` interval drawn as an error bar.
    """
    plt = _pyplot()
    names = list(series)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 0.4 * len(names)), 3.8))
    for j, name in enumerate(names):
        values = [np.nan if v is None else float(v) for v in series[name]]
        yerr = None
        if errors and name in errors:
            low, high = [], []
            for v, ci in zip(values, errors[name]):
                if ci is None or np.isnan(v):
                    low.append(0.0)
                    high.append(0.0)
                else:
                    low.append(max(0.0, v - ci[0]))
                    high.append(max(0.0, ci[1] - v))
            yerr = np.array([low, high])
        ax.bar(x + (j - (len(names) - 1) / 2) * width, values, width, label=name, yerr=yerr,
               capsize=2 if yerr is not None else 0)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def simple_bars(
    *, path: Path, labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(labels) + 1), 3.4))
    ax.bar(np.arange(len(labels)), [float(v) for v in values], color="#4C72B0")
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=30 if len(labels) > 6 else 0, ha="right"
                       if len(labels) > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
