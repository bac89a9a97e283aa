"""The signal-propagation plot: forward and backward second moments against depth, one line per scheme.

matplotlib is an optional extra (``pip install initwise[plot]``), imported inside :func:`plot_profile`; the figure
is drawn with the object API and the Agg canvas, so no global backend is chosen or changed.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["plot_profile"]


def plot_profile(profile: Any, path: str | os.PathLike | None = None, *, dpi: int = 110,
                 predictions: bool = True) -> Any:
    """Draw a :class:`initwise.Profile`: measured ``fwd`` and ``bwd`` per layer (log scale), one line per scheme.

    Dotted lines of the same colour are the plan's predictions; the shaded bands are the vanishing (below 1e-2) and
    exploding (above 1e2) zones of :func:`initwise.diagnose`.

    Args:
        profile: what :func:`initwise.diagnose` returned.
        path: where to save the figure (PNG, SVG, PDF: from the suffix); None only returns it.
        dpi: resolution of a saved raster image.
        predictions: also draw the predictions.

    Returns:
        the ``matplotlib.figure.Figure``.

    Example:
        >>> fig = plot_profile(diagnose(net, x, schemes=["default", "kaiming_fan_in"]), "spp.png")  # doctest: +SKIP
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the signal-propagation plot needs matplotlib: pip install 'initwise[plot]'") from e
    from ._flags import EXPLODING, VANISHING

    fig = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharex=True)
    colors = [f"C{i % 10}" for i in range(len(profile.runs))]
    depth = 0
    for run, color in zip(profile.runs, colors):
        depth = max(depth, len(run.layers))
        for ax, key in zip(axes, ("forward", "backward")):
            xs = [k + 1 for k, lp in enumerate(run.layers) if _positive(getattr(lp, key))]
            ys = [getattr(lp, key) for lp in run.layers if _positive(getattr(lp, key))]
            ax.plot(xs, ys, "-o", color=color, markersize=3, linewidth=1.6, label=run.scheme)
            if predictions:
                pk = "predicted_" + key
                px = [k + 1 for k, lp in enumerate(run.layers) if _positive(getattr(lp, pk))]
                py = [getattr(lp, pk) for lp in run.layers if _positive(getattr(lp, pk))]
                ax.plot(px, py, ":", color=color, linewidth=1.2)
    titles = ("forward: E[y²] / E[x²] (layer output / input)", "backward: E[dy²] / E[c²] (layer output / cotangent)")
    for ax, title in zip(axes, titles):
        ax.set_yscale("log")
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        lo, hi = ax.get_ylim()
        ax.axhspan(min(lo, VANISHING / 10), VANISHING, color="tab:blue", alpha=0.07, linewidth=0)
        ax.axhspan(EXPLODING, max(hi, EXPLODING * 10), color="tab:red", alpha=0.07, linewidth=0)
        ax.set_ylim(min(lo, VANISHING / 3), max(hi, EXPLODING * 3))
        ax.set_xlabel("layer (execution order)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlim(0.5, max(depth, 1) + 0.5)
    axes[0].legend(fontsize=8, title="scheme (dotted: predicted)", title_fontsize=8)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig


def _positive(v: Any) -> bool:
    return v is not None and v == v and v > 0
