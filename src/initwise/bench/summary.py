"""Summaries of a results file: mean +- std per (task, model, scheme), Welch t-tests, and a PSNR-vs-step plot.

Statistics: per cell the PSNR at a step (the final one by default) over seeds, mean and sample std (``ddof=1``).
Each scheme is compared with the best scheme of its model and with ``"default"`` (PyTorch's init) by Welch's
unequal-variance t-test, two-sided (``scipy.stats.ttest_ind(equal_var=False)``; Welch 1947). With 3 seeds per cell
the test has little power: a difference that is not marked is not shown to be absent. No correction for multiple
comparisons is made. A diverged run counts in ``diverged`` and is left out of the PSNR statistics.

Example:
    >>> rows = summarize([])
    >>> rows
    []
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Row", "TEST_NAME", "format_matrix", "format_table", "plot", "psnr_at", "summarize", "welch"]

TEST_NAME = "Welch t-test, two-sided"
ALPHA = 0.05  # significance level of the marks; conventional, not tuned


def psnr_at(rec: dict[str, Any], step: int | None = None) -> float | None:
    """Test PSNR of a record after ``step`` updates (``None``: the final one); ``None`` if not measured/diverged."""
    if rec.get("status") != "ok":
        return None
    if step is None:
        return rec.get("final_psnr")
    steps = rec.get("eval_steps") or []
    if step not in steps or (rec.get("diverged") and rec.get("diverged_at", 0) <= step):
        return None
    return rec["eval_psnr"][steps.index(step)]


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test for equal means; ``nan`` when it is undefined (n < 2, no variance)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return math.nan
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


@dataclass
class Row:
    """One (task, model, scheme) cell of the summary; PSNR in dB, deltas = this mean minus the other's mean."""

    task: str
    model: str
    scheme: str
    n: int
    diverged: int
    mean: float
    std: float
    baseline: float
    init_loss: float
    init_output_std: float
    init_target_std: float
    wall_s: float
    rank: int = 0
    d_best: float = math.nan
    p_best: float = math.nan
    d_default: float = math.nan
    p_default: float = math.nan


def _mean(xs: Sequence[float | None]) -> float:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else math.nan


def summarize(records: Sequence[dict[str, Any]], step: int | None = None) -> list[Row]:
    """Rows per (task, model, scheme) at ``step`` (``None``: final), ranked within each (task, model) by mean."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        if r.get("status") == "ok":
            cells.setdefault((r["task"], r["model"], r["scheme"]), []).append(r)
    values: dict[tuple[str, str, str], list[float]] = {}
    rows: list[Row] = []
    for key, recs in cells.items():
        vals = [v for v in (psnr_at(r, step) for r in recs) if v is not None]
        values[key] = vals
        rows.append(Row(*key, n=len(vals), diverged=sum(bool(r.get("diverged")) for r in recs),
                        mean=statistics.fmean(vals) if vals else math.nan,
                        std=statistics.stdev(vals) if len(vals) > 1 else math.nan,
                        baseline=_mean([r.get("baseline_psnr") for r in recs]),
                        init_loss=_mean([r.get("initial_loss") for r in recs]),
                        init_output_std=_mean([r.get("initial_output_std") for r in recs]),
                        init_target_std=_mean([r.get("initial_target_std") for r in recs]),
                        wall_s=_mean([r.get("wall_time_s") for r in recs])))
    out: list[Row] = []
    for tm in dict.fromkeys((r.task, r.model) for r in rows):
        group = sorted((r for r in rows if (r.task, r.model) == tm),
                       key=lambda r: (-r.mean if not math.isnan(r.mean) else math.inf, r.scheme))
        best = group[0]
        default = next((r for r in group if r.scheme == "default"), None)
        for i, r in enumerate(group, 1):
            r.rank = i
            k = (r.task, r.model, r.scheme)
            r.d_best = r.mean - best.mean
            r.p_best = welch(values[k], values[(best.task, best.model, best.scheme)]) if r is not best else math.nan
            if default is not None and r is not default:
                r.d_default = r.mean - default.mean
                r.p_default = welch(values[k], values[(default.task, default.model, default.scheme)])
        out += group
    return out


def _p(p: float) -> str:
    if math.isnan(p):
        return ""
    return f"{p:.3f}{'*' if p < ALPHA else ''}" if p >= 0.001 else "<0.001*"


def _ns(rows: Sequence[Row]) -> str:
    ns = sorted({r.n for r in rows})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}" if ns else "0"


def format_table(rows: Sequence[Row], *, markdown: bool = False, step: int | None = None) -> str:
    """The summary as an aligned text table (or a Markdown table) with a header saying which test was used."""
    head = ["task", "model", "scheme", "rank", "PSNR mean +- std", "n", "div", "base", "vs base", "vs best", "p",
            "vs default", "p", "loss@0", "out std@0", "tgt std", "s/run"]
    body = []
    for r in rows:
        spread = f"{r.mean:.2f} +- {r.std:.2f}" if r.n > 1 else f"{r.mean:.2f}" if r.n == 1 else "-"
        body.append([r.task, r.model, r.scheme, str(r.rank), spread, str(r.n),
                     str(r.diverged), f"{r.baseline:.2f}", f"{r.mean - r.baseline:+.2f}", "" if r.rank == 1 else f"{r.d_best:+.2f}", _p(r.p_best),
                     "" if math.isnan(r.d_default) else f"{r.d_default:+.2f}", _p(r.p_default),
                     f"{r.init_loss:.3g}", f"{r.init_output_std:.3g}", f"{r.init_target_std:.3g}",
                     f"{r.wall_s:.0f}"])
    at = "final step" if step is None else f"step {step}"
    most = max((r.n for r in rows), default=0)
    if most < 2:
        test = (f"n = {_ns(rows)} seed per cell: no spread and no significance test (both need >= 2 seeds per "
                "cell).")
    else:
        test = (f"p: {TEST_NAME} (Welch 1947), '*' p < {ALPHA}; n = {_ns(rows)} seeds per cell: low power, no "
                "multiple-comparison correction" + ("; a cell with n < 2 has no std and no test." if
                                                    min(r.n for r in rows) < 2 else "."))
    note = (f"test PSNR (dB) at the {at}, mean +- sample std over seeds; base = bicubic / noisy input. " + test)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(c.replace("+-", "±") for c in row) + " |" for row in body]
        return note + "\n\n" + "\n".join(lines) + "\n"
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *body]]
    return note + "\n" + "\n".join(lines) + "\n"


def format_matrix(rows: Sequence[Row], schemes: Sequence[str] | None = None) -> str:
    """A Markdown matrix, schemes x (task, model): ``mean ± std``; **bold** the best of each model, ``*`` a
    difference from ``default`` with Welch p < 0.05, ``(k div)`` diverged runs; a last row gives the baseline."""
    cols = list(dict.fromkeys((r.task, r.model) for r in rows))
    present = list(dict.fromkeys(r.scheme for r in rows))
    schemes = [s for s in schemes if s in present] + [s for s in present if s not in schemes] if schemes else present
    cell = {(r.task, r.model, r.scheme): r for r in rows}
    lines = ["| scheme | " + " | ".join(f"{m} ({t})" for t, m in cols) + " |", "|---|" + "---|" * len(cols)]
    for s in schemes:
        out = []
        for t, m in cols:
            r = cell.get((t, m, s))
            if r is None or r.n == 0:
                out.append("" if r is None else f"({r.diverged} div)")
                continue
            txt = f"{r.mean:.2f} ± {r.std:.2f}" if r.n > 1 else f"{r.mean:.2f}"
            txt = f"**{txt}**" if r.rank == 1 else txt
            txt += " *" if not math.isnan(r.p_default) and r.p_default < ALPHA else ""
            txt += f" ({r.diverged} div)" if r.diverged else ""
            out.append(txt)
        lines.append(f"| {s} | " + " | ".join(out) + " |")
    base = {(r.task, r.model): r.baseline for r in rows}
    lines.append("| *baseline* | " + " | ".join(f"*{base[c]:.2f}*" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def plot(records: Sequence[dict[str, Any]], path: str, *, title: str | None = None) -> None:
    """PNG of test PSNR against training step: one panel per (task, model), one line per scheme (mean over
    seeds, shaded min..max), the baseline dashed. Uses matplotlib's object API (no global backend is set)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [r for r in records if r.get("status") == "ok"]
    panels = list(dict.fromkeys((r["task"], r["model"]) for r in ok))
    if not panels:
        raise ValueError("no finished runs to plot")
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = Figure(figsize=(5.0 * ncol, 3.8 * nrow), layout="constrained")
    FigureCanvasAgg(fig)
    schemes = list(dict.fromkeys(r["scheme"] for r in ok))
    colors = {s: f"C{i % 10}" for i, s in enumerate(schemes)}
    styles = {s: "-" if i < 10 else "--" for i, s in enumerate(schemes)}
    for idx, (task, model) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, idx + 1)
        recs = [r for r in ok if (r["task"], r["model"]) == (task, model)]
        lows = []
        for s in schemes:
            rs = [r for r in recs if r["scheme"] == s]
            if not rs:
                continue
            steps = sorted(set.intersection(*(set(r["eval_steps"]) for r in rs)))
            pts = [(st, [v for v in (psnr_at(r, st) for r in rs) if v is not None]) for st in steps]
            pts = [(st, v) for st, v in pts if v]
            if not pts:
                continue
            xs = [st for st, _ in pts]
            ax.plot(xs, [statistics.fmean(v) for _, v in pts], styles[s], color=colors[s], label=s, lw=1.4)
            ax.fill_between(xs, [min(v) for _, v in pts], [max(v) for _, v in pts], color=colors[s], alpha=0.15,
                            lw=0)
            lows.append(statistics.fmean(pts[-1][1]))
        base = _mean([r.get("baseline_psnr") for r in recs])
        ax.axhline(base, color="k", ls=":", lw=1, label="bicubic / noisy input")
        finite = [v for v in lows if math.isfinite(v)]
        if finite and math.isfinite(base):
            ax.set_ylim(min(min(finite), base) - 4.0, max(max(finite), base) + 1.0)
        ax.set_title(f"{model} on {task}", fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=90)
