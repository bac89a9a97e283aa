"""Tokens whose positions differ: ViT's class token beside the patches, and a head that reads it alone.

The rules take the positions of a tensor as alike: each has the tensor's mean power. A ViT breaks that twice. Its
stream starts as ``cat(cls_token, patches) + pos_embed``: the class token's row has the power of its parameter
and the position embedding (timm draws ``cls_token`` with std 1e-6, ``pos_embed`` with 0.02: ~4e-4, against ~0.3
for a patch row), and every residual branch adds the same power to every row, so the class row stays small
through the blocks. Its head reads ``x[:, 0]``: the whole gradient enters the class row. A layer norm over the
channels of each token divides each row's gradient by that row's own variance, so the class row's gradient is
multiplied by ``1 / v_0``, hundreds of times more than a patch row's: predicted from the mean row, the backward
into the first block came out 10-33x low (timm's vit_tiny, 4 blocks, 5 tokens).

``Sig.prof`` and ``Grad.prof`` carry each position's power over the mean for ``(N, T, C)`` tokens:

- set by a cat along the token dim (its operands' powers: a parameter operand such as the class token from its
  values, ``Graph`` node ``parts``), by a shift by a constant with a row per token (``pos_embed``: its rows'
  powers), and in the backward by a getitem that keeps some tokens (``select``: the gradient reaches those only);
- carried by value-preserving ops of the same shape, dropout, scales, a ReLU-like activation, a residual join
  (powers add), a dense layer over the channels (each row's power times the same gain, plus the bias);
- used by a layer norm (or RMS norm) over each token's channels: forward, each row's ``v_i / (v_i + eps)``;
  backward, ``E_i[p^g_i / (v p_i + eps)]`` in place of ``1 / (v + eps)``, and the profile ``p^g_i / (v p_i + eps)``
  on;
- dropped (flat) by every other op: attention averages its values over the tokens, so the gradient it returns to
  its values and keys is flat (its queries' share, which keeps the output's profile, is thousands of times
  smaller at init and taken as flat too: approximate).

Profiles are kept up to ``PROFILE_MAX`` positions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from ._rules_act import _HOMOGENEOUS
from ._rules_layer import _shared
from ._signal import Grad, Sig, flat_or, mixed_profile

__all__ = ["PROFILE_MAX", "cat_backward", "cat_parts", "forward_profile", "backward_profiles", "norm_backward_factor",
           "shift_const"]

PROFILE_MAX = 4096
_SAME = frozenset(("Identity", "identity", "contiguous", "clone", "detach", "to", "float", "type_as", "Dropout",
                   "dropout", "DropPath", "drop_path", "alpha"))


def _tokens(shape: tuple[int, ...]) -> int:
    """The number of token positions of a ``(N, T, C)`` shape (0 for any other rank, or too many)."""
    return shape[1] if len(shape) == 3 and 0 < shape[1] <= PROFILE_MAX else 0


def _fits(p: tuple[float, ...] | None, shape: tuple[int, ...]) -> tuple[float, ...] | None:
    return p if p is not None and len(p) == _tokens(shape) else None


def param_sig(v: torch.Tensor) -> Sig:
    """The moments of a constant operand (a class token: the same in every sample)."""
    ms, mean = float(v.pow(2).mean()), float(v.mean())
    return Sig(ms, mean, mean * mean, mean * mean).clean()


def cat_parts(n: Any, ins: list[Sig], shapes: list[tuple[int, ...]],
              consts: dict[str, torch.Tensor]) -> tuple[list[Sig], list[int]] | None:
    """Every operand of the cat ``n`` with its size along the cat dim: the traced ones' moments and the parameter
    operands' from their values (``consts``); None when an operand is unknown (the cat then averages the traced
    operands alone, as before)."""
    if n.parts is None:
        return None
    by_id = dict(zip(n.inputs, ins))
    sigs, sizes = [], []
    for size, src in n.parts:
        if isinstance(src, int) and src in by_id:
            sigs.append(by_id[src])
        elif isinstance(src, str) and src in consts and consts[src].numel():
            sigs.append(param_sig(consts[src]))
        else:
            return None
        sizes.append(size)
    return sigs, sizes


def shift_const(n: Any, consts: dict[str, torch.Tensor]) -> tuple[float, float, int] | None:
    """``(mean, mean square, count)`` of a shift's parameter operand (``n.source``) from its values."""
    v = consts.get(n.source) if n.source is not None else None
    if v is None or not v.numel():
        return None
    return float(v.mean()), float(v.pow(2).mean()), v.numel()


def _row_powers(v: torch.Tensor, t: int) -> list[float] | None:
    """Per token, the mean square of a constant broadcast over ``(N, T, C)``: ``(1, T, C)``, ``(T, C)``."""
    if v.dim() == 3 and v.shape[0] == 1 and v.shape[1] == t:
        return v[0].pow(2).mean(-1).tolist()
    if v.dim() == 2 and v.shape[0] == t:
        return v.pow(2).mean(-1).tolist()
    return None


def forward_profile(n: Any, out: Sig, ins: list[Sig], shapes: list[tuple[int, ...]], lm: Any, nm: Any,
                    consts: dict[str, torch.Tensor], cat: tuple[list[Sig], list[int]] | None) -> Sig:
    """``out`` with the profile the node ``n`` gives its output (None where it keeps none)."""
    t = _tokens(n.shape)
    prof = None
    if t and ins:
        x = ins[0]
        k = n.kind
        same = bool(shapes) and tuple(shapes[0]) == tuple(n.shape)
        if k == "cat" and (n.cat_dim or 0) % 3 == 1:
            sigs, sizes = cat if cat is not None else (ins, [s[1] if len(s) == 3 else 0 for s in shapes])
            if sum(sizes) == t:
                rows: list[float] = []
                for s, size in zip(sigs, sizes):
                    p = s.prof if s.prof is not None and len(s.prof) == size else None
                    rows += [s.q * (p[i] if p else 1.0) for i in range(size)]
                prof = flat_or(tuple(rows))
        elif k == "shift" and same:
            v = None
            if n.const is not None and n.const[0]:
                v = torch.tensor(n.const[1], dtype=torch.float64).reshape(n.const[0])
            elif n.source is not None:
                v = consts.get(n.source)
            c = _row_powers(v, t) if v is not None else None
            base = _fits(x.prof, n.shape)
            if c is not None or base is not None:
                # each row's power plus the constant's row (the means' cross term, which a row's own means would
                # give, is left out: approximate)
                cm = sum(c) / t if c is not None else max(out.q - x.q, 0.0)
                prof = flat_or(tuple(x.q * (base[i] if base else 1.0) + (c[i] if c else cm) for i in range(t)))
        elif k in ("add", "sub"):
            prof = mixed_profile([(s.q, _fits(s.prof, n.shape) if tuple(sh) == tuple(n.shape) else None)
                                  for s, sh in zip(ins, shapes)])
        elif k in ("pass", "scale") and same and (k == "scale" or n.op in _SAME):
            prof = _fits(x.prof, n.shape)
        elif k == "act" and same and n.activation is not None and n.activation.name in _HOMOGENEOUS:
            prof = _fits(x.prof, n.shape)
        elif k == "layer" and _over_channels(lm) and len(shapes[0]) == 3 and shapes[0][1] == t \
                and _fits(x.prof, shapes[0]) is not None and out.q > 0:
            b = min(lm.bias_ms, out.q)
            prof = flat_or(tuple((out.q - b) * p + b for p in x.prof))
        elif k == "norm" and nm is not None and _per_token(nm) and same and _fits(x.prof, n.shape) is not None:
            var, eps = _variance(nm, x, n.shape)
            rows = [nm.gamma_ms * (var * p) / (var * p + eps) + nm.beta_ms if var * p + eps > 0 else nm.beta_ms
                    for p in x.prof]
            q = sum(rows) / t  # the rows' mean (a class row held by eps counts as what it is)
            if out.q > 0 and q > 0:
                f = q / out.q
                out = replace(out, q=q, dc=out.dc * f, dcb=out.dcb * f, mean=out.mean * f ** 0.5)
            prof = flat_or(tuple(rows))
    if prof is None and out.prof is None:
        return out
    return replace(out, prof=prof)


def _over_channels(lm: Any) -> bool:
    """A dense layer over the last dim only (``nn.Linear`` on tokens), not a convolution (a Conv1d's ``(N, C, L)``
    mixes what this module takes as the rows)."""
    return lm is not None and lm.kind == "affine" and not lm.kernel_size


def _per_token(nm: Any) -> bool:
    return nm.kind == "rms" or nm.kind == "layer" and not nm.over_positions


def _variance(nm: Any, x: Sig, shape: tuple[int, ...]) -> tuple[float, float]:
    """The variance a per-token norm divides the mean row by, and its eps (the norm rules' own)."""
    return max(_shared(nm, x, shape)[0], 0.0), nm.eps


def norm_backward_factor(nm: Any, d: Grad, x: Sig, shape: tuple[int, ...]) -> tuple[float, tuple[float, ...] | None]:
    """For a per-token norm: the factor on its backward for rows of different variance or gradient
    (``E_i[p^g_i / (v p_i + eps)] (v + eps)``) and the profile it passes on; ``(1, None)`` where both are flat."""
    px, pg = _fits(x.prof, shape), _fits(d.prof, shape)
    if nm is None or not _per_token(nm) or (px is None and pg is None):
        return 1.0, None
    var, eps = _variance(nm, x, shape)
    if not var + eps > 0:
        return 1.0, None
    t = _tokens(shape)
    h = [(pg[i] if pg else 1.0) / (var * (px[i] if px else 1.0) + eps) for i in range(t)]
    mean = sum(h) / t
    return mean * (var + eps), flat_or(tuple(h))


def cat_backward(n: Any, d: Grad, shapes: list[tuple[int, ...]]) -> list[Grad] | None:
    """A cat along the token dim whose output gradient has a profile: each traced operand gets the power of its
    own rows (the class token's row goes to the class token, not to the patches) and their profile; None where
    the gradient is flat or the operands cannot be placed."""
    p = _fits(d.prof, n.shape)
    if p is None or (n.cat_dim or 0) % 3 != 1:
        return None
    parts = n.parts if n.parts is not None else tuple((s[1] if len(s) == 3 else 0, i)
                                                      for i, s in zip(n.inputs, shapes))
    if sum(size for size, _ in parts) != len(p):
        return None
    rows: dict[int, tuple[float, ...]] = {}
    start = 0
    for size, src in parts:
        if isinstance(src, int):
            rows[src] = p[start:start + size]
        start += size
    out = []
    for i in n.inputs:
        r = rows.get(i)
        if not r:
            return None
        m = sum(r) / len(r)
        out.append(Grad(d.g * m, d.dc * m, d.dcb * m, prof=flat_or(r)))
    return out


def backward_profiles(n: Any, d: Grad, contrib: list[Grad], shapes: list[tuple[int, ...]], lm: Any,
                      prof_norm: tuple[float, ...] | None) -> list[Grad]:
    """The gradients ``contrib`` of the node ``n``'s inputs with the profiles ``n`` gives them (flat where it
    keeps none): ``prof_norm`` is a per-token norm's (:func:`norm_backward_factor`)."""
    k = n.kind
    out = []
    for j, (c, sh) in enumerate(zip(contrib, shapes)):
        t = _tokens(sh)
        p = None
        same = tuple(sh) == tuple(n.shape)
        if t:
            if k == "pass" and n.op == "getitem" and n.select is not None and j == 0:
                inner = _fits(d.prof, n.shape) if len(n.shape) == 3 and n.shape[1] == len(n.select) else None
                rows = [0.0] * t
                for r, i in enumerate(n.select):
                    rows[i] = inner[r] if inner else 1.0
                p = flat_or(tuple(rows))
            elif k in ("add", "sub", "shift", "output") and same:
                p = _fits(d.prof, sh)
            elif k in ("pass", "scale") and same and (k == "scale" or n.op in _SAME):
                p = _fits(d.prof, sh)
            elif k == "act" and same:
                p = _fits(d.prof, sh)  # the slope at each row's own variance taken as the mean's (approximate)
            elif k == "layer" and j == 0 and _over_channels(lm) and len(n.shape) == 3 and n.shape[1] == t:
                p = _fits(d.prof, n.shape)
            elif k == "norm" and same:
                p = prof_norm
            elif k == "cat":
                p = _fits(c.prof, sh)  # set by cat_backward
        if p is not None or c.prof is not None:
            c = replace(c, prof=p)
        out.append(c)
    return out
