"""The meta pass's memo of shape-only op results (initwise._meta_ops): same metadata as calling the op, or the op runs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
import torch.nn.functional as F

from initwise import _meta_ops


def _meta(*shape: int, **kw) -> torch.Tensor:
    return torch.empty(shape, device="meta", **kw)


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert type(a) is type(b) is torch.Tensor and a.is_meta and b.is_meta
    assert (a.shape, a.stride(), a.dtype, a.storage_offset(), a.requires_grad) == \
        (b.shape, b.stride(), b.dtype, b.storage_offset(), b.requires_grad)


CASES = [
    (torch.conv2d, lambda: (_meta(2, 3, 17, 13), _meta(8, 3, 3, 3), None, 2, 1), {}),
    (torch.conv2d, lambda: (_meta(2, 4, 9, 9).to(memory_format=torch.channels_last), _meta(4, 2, 3, 3)),
     {"groups": 2, "dilation": 2}),
    (torch._C._nn.linear, lambda: (_meta(3, 5, 16), _meta(7, 16), _meta(7)), {}),
    (torch.Tensor.__add__, lambda: (_meta(2, 8, 4, 4), _meta(1, 8, 1, 1)), {}),
    (torch.Tensor.__mul__, lambda: (_meta(2, 8, dtype=torch.float16), 0.5), {}),
    (torch.add, lambda: (_meta(4, 4), _meta(4, 4, dtype=torch.float64)), {"alpha": 2}),
    (torch._C._nn.scaled_dot_product_attention, lambda: (_meta(2, 4, 6, 8), _meta(2, 4, 6, 8), _meta(2, 4, 6, 8)),
     {"is_causal": True}),
    (F.relu, lambda: (_meta(3, 5).t(),), {}),
    (F.softmax, lambda: (_meta(2, 3, 5),), {"dim": -1}),
    (F.max_pool2d, lambda: (_meta(1, 2, 9, 9), 3), {"stride": 2, "return_indices": True}),
    (torch.cat, lambda: ([_meta(2, 3), _meta(4, 3)],), {"dim": 0}),
    (torch.Tensor.mean, lambda: (_meta(2, 3, 4),), {"dim": (1, 2), "keepdim": True}),
]


@pytest.mark.parametrize("func,make,kwargs", CASES, ids=lambda v: getattr(v, "__name__", None))
def test_a_memoized_result_has_the_metadata_of_the_op_itself(func, make, kwargs) -> None:
    _meta_ops._MEMO.clear()
    first = _meta_ops.call(func, make(), kwargs)
    assert len(_meta_ops._MEMO) == 1 and next(iter(_meta_ops._MEMO.values())) is not None  # recorded
    second = _meta_ops.call(func, make(), kwargs)  # answered from the memo
    direct = func(*make(), **kwargs)
    if isinstance(direct, tuple):
        assert isinstance(second, tuple) and len(second) == len(direct)
        for a, b, c in zip(first, second, direct):
            _same(a, c)
            _same(b, c)
    else:
        _same(first, direct)
        _same(second, direct)
        assert second is not first  # a fresh tensor each call


def test_in_place_calls_and_real_tensors_always_run_the_op() -> None:
    _meta_ops._MEMO.clear()
    x = _meta(2, 3)
    assert _meta_ops.call(F.relu, (x, True), {}) is x  # inplace positionally
    assert _meta_ops.call(F.relu, (x,), {"inplace": True}) is x
    out = _meta(2, 3)
    assert _meta_ops.call(torch.add, (x, x), {"out": out}) is out
    real = torch.ones(2, 3)
    y = _meta_ops.call(torch.add, (real, real), {})
    assert torch.equal(y, torch.full((2, 3), 2.0))  # values computed: never a memo answer
    p = torch.nn.Parameter(_meta(2, 3))
    _meta_ops.call(torch.add, (p, x), {})  # a tensor subclass: not keyed
    assert not _meta_ops._MEMO


def test_an_op_that_raised_raises_again_and_unlisted_ops_run() -> None:
    _meta_ops._MEMO.clear()
    for _ in range(2):
        with pytest.raises(RuntimeError):
            _meta_ops.call(torch.conv2d, (_meta(1, 3, 8, 8), _meta(4, 5, 3, 3)), {})  # channel mismatch
    v = _meta(4, 6)
    w = _meta_ops.call(torch.Tensor.view, (v, 24), {})  # a view: not listed, runs
    assert w._base is v and not _meta_ops._MEMO


def test_grad_mode_and_default_dtype_are_part_of_the_key() -> None:
    _meta_ops._MEMO.clear()
    a, b = _meta(3, requires_grad=True), _meta(3)
    with torch.no_grad():
        assert not _meta_ops.call(torch.Tensor.__mul__, (a, b), {}).requires_grad
    assert _meta_ops.call(torch.Tensor.__mul__, (a, b), {}).requires_grad
    assert _meta_ops.call(torch.Tensor.__mul__, (a, b), {}).requires_grad
    assert len(_meta_ops._MEMO) == 2


def _canonical(shape: tuple[int, ...]) -> tuple[int, ...]:
    return torch.empty(shape, device="meta").stride()


def _rule_cases(rng: random.Random):
    """(func, args, kwargs) in and around the rules' cases: shapes with 1s and broadcasting, dtypes, scalars."""
    T = torch.Tensor
    fl = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
    dts = fl + [torch.int64, torch.bool]

    def shape(nd: int) -> tuple[int, ...]:
        return tuple(rng.choice([1, 1, 2, 3, 5]) for _ in range(nd))

    for _ in range(400):  # binary elementwise
        op = rng.choice([T.__add__, T.__radd__, T.__sub__, T.__rsub__, T.__mul__, T.__rmul__, T.__truediv__,
                         torch.add, torch.sub, torch.mul, torch.div])
        s1 = shape(rng.randint(0, 4))
        s2 = tuple(rng.choice([d, 1]) for d in s1[rng.randint(0, len(s1)):])
        if rng.random() < 0.3:
            s1, s2 = s2, s1
        a = _meta(*s1, dtype=rng.choice(dts))
        b = _meta(*s2, dtype=rng.choice(dts)) if rng.random() < 0.7 else rng.choice([2, 0.5, True])
        yield op, (a, b), {}
    for _ in range(100):  # unary
        op = rng.choice([torch.relu, T.relu, F.relu, F.hardswish, F.gelu, torch.tanh, T.tanh, torch.neg, T.__neg__])
        kw = {"approximate": "tanh"} if op is F.gelu and rng.random() < 0.5 else {}
        yield op, (_meta(*shape(rng.randint(0, 4)), dtype=rng.choice(fl)),), kw
    for _ in range(200):  # reductions
        nd = rng.randint(1, 4)
        x = _meta(*shape(nd), dtype=rng.choice(fl))
        k = rng.random()
        args = () if k < 0.2 else (rng.randrange(-nd, nd),) if k < 0.6 else (
            tuple(sorted(rng.sample(range(nd), rng.randint(1, nd)))),)
        kw = {"keepdim": rng.random() < 0.5} if args and rng.random() < 0.5 else {}
        yield rng.choice([torch.mean, T.mean, torch.sum, T.sum]), (x, *args), kw
    for _ in range(100):  # cat
        nd = rng.randint(1, 4)
        s, d, dt = list(shape(nd)), rng.randrange(-nd, nd), rng.choice(fl)
        ts = []
        for _ in range(rng.randint(1, 3)):
            s[d] = rng.choice([1, 2, 3])
            ts.append(_meta(*s, dtype=dt))
        yield rng.choice([torch.cat, torch.concat]), (ts, d), {}
    for _ in range(100):  # adaptive average pooling
        x = _meta(*shape(rng.choice([3, 4])), dtype=rng.choice(fl))
        yield F.adaptive_avg_pool2d, (x, rng.choice([1, 2, 3, (1, 2), (None, 2), (2, None), [3, 1]])), {}
    for _ in range(200):  # linear
        lead = shape(rng.randint(0, 3))
        i, o, dt = rng.choice([1, 3, 8]), rng.choice([1, 2, 5]), rng.choice(fl)
        b = (_meta(o, dtype=dt),) if rng.random() < 0.6 else ()
        yield torch._C._nn.linear, (_meta(*lead, i, dtype=dt), _meta(o, i, dtype=dt), *b), {}


def test_the_rules_give_what_the_meta_kernels_give() -> None:
    rng = random.Random(0)
    ruled = 0
    for func, args, kwargs in _rule_cases(rng):
        try:
            want = func(*args, **kwargs)
        except RuntimeError:  # the op rejects these arguments: the rule must not accept them
            with torch._C.DisableTorchFunction():
                try:
                    got = _meta_ops._RULES[func](func, args, kwargs)
                except Exception:  # noqa: BLE001 - raising is declining too
                    got = None
            assert got is None, (func, args, kwargs)
            continue
        got = _meta_ops._RULES[func](func, args, kwargs)
        if got is not None:
            ruled += 1
            _same(got, want)
            assert got.stride() == _canonical(tuple(want.shape))
    assert ruled > 600  # most cases are inside a rule (floating, standard strides)


def test_rules_decline_other_strides_integers_and_extra_arguments() -> None:
    R = _meta_ops._RULES
    x = _meta(4, 6)
    assert R[torch.Tensor.__add__](torch.Tensor.__add__, (x.t(), x.t()), {}) is None  # transposed strides
    assert R[torch.Tensor.__add__](torch.Tensor.__add__, (_meta(4, dtype=torch.int64), 1), {}) is None
    assert R[torch.add](torch.add, (x, x), {"alpha": 2}) is None
    assert R[F.relu](F.relu, (x,), {"inplace": True}) is None
    assert R[torch.mean](torch.mean, (x,), {"dtype": torch.float64}) is None
    assert R[torch.cat](torch.cat, ([x, _meta(4, 5)], 0), {}) is None  # the op would reject it
    cl = _meta(1, 3, 4, 4).to(memory_format=torch.channels_last)
    assert R[F.adaptive_avg_pool2d](F.adaptive_avg_pool2d, (cl, 1), {}) is None


def test_a_meta_trace_of_a_resnet_runs_no_python_reference_kernel() -> None:
    """ResNet's ops on the meta device need no Python reference kernel (whose first call imports torch._dynamo)
    nor torch's symbolic-shape checks (~500 modules), checked in a fresh interpreter."""
    assert _heavy_imports_after("from resnet50 import resnet50\n"
                                "m = resnet50(); iw.plan(m, torch.randn(1, 3, 64, 64)); "
                                "iw.plan(m.eval(), torch.randn(1, 3, 64, 64))\n") == "False False"


def _heavy_imports_after(code: str) -> str:
    """Run ``code`` (with ``torch`` and ``initwise as iw`` imported, ``benchmarks`` on the path) in a fresh
    interpreter; ``"<dynamo imported> <symbolic shapes imported>"`` afterwards, e.g. ``"False False"``."""
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import torch, initwise as iw\n" + code
            + "print('torch._dynamo' in sys.modules, 'torch.fx.experimental.symbolic_shapes' in sys.modules)\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


_SPATIAL = {torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}


@st.composite
def _conv_case(draw):
    """A convolution around the rule's case: ints or per-dim tuples, "same"/"valid", dilation, groups, kernels
    larger than the padded input, channel counts that do not divide, bias or none, other dtypes and strides."""
    func = draw(st.sampled_from(list(_SPATIAL)))
    n = _SPATIAL[func]
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 3)) + draw(st.sampled_from([0, 0, 0, 1]))
    c_out = groups * draw(st.integers(1, 3)) + draw(st.sampled_from([0, 0, 0, 1]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
    size = tuple(draw(st.integers(1, 9 if n < 3 else 6)) for _ in range(n))

    def per_dim(values):
        return st.one_of(st.sampled_from(values), st.tuples(*(st.sampled_from(values) for _ in range(n))))

    stride, dilation = draw(per_dim([1, 1, 2, 3])), draw(per_dim([1, 1, 2]))
    padding = draw(st.one_of(per_dim([0, 1, 2]), st.sampled_from(["same", "valid"])))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16]))
    bias = draw(st.booleans())
    channels_last = n == 2 and draw(st.sampled_from([False, False, True]))
    return func, (draw(st.integers(1, 3)), c_in, *size), (c_out, c_in // groups or 1, *kernel), bias, dtype, \
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups), channels_last


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_conv_case())
def test_the_conv_rule_gives_the_shape_of_the_real_convolution(case) -> None:
    """Whatever the rule accepts is exactly what the meta kernel returns (shape, strides, dtype), and the shape
    the real convolution computes on real tensors; what either rejects, the rule declines."""
    func, xs, ws, bias, dtype, kw, channels_last = case
    x, w = _meta(*xs, dtype=dtype), _meta(*ws, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    args = (x, w, _meta(ws[0], dtype=dtype) if bias else None)
    with torch._C.DisableTorchFunction():
        try:
            got = _meta_ops._RULES[func](func, args, kw)
        except Exception:  # noqa: BLE001 - raising is declining too
            got = None
    try:
        with warnings.catch_warnings():  # torch warns of its extra input copy for an asymmetric "same"
            warnings.filterwarnings("ignore", "Using padding='same'", UserWarning)
            want = func(*args, **kw)
            real = func(*(torch.zeros(t.shape, dtype=torch.float64) if t is not None else None for t in args),
                        **kw).shape
    except RuntimeError:
        assert got is None, case
        return
    if got is not None:
        _same(got, want)
        assert got.shape == real


@st.composite
def _pool_case(draw):
    """A max pooling around the rule's case: kernels, strides (None: the kernel), paddings up to and past half the
    kernel, dilation, ceil_mode, one channel or position, channels_last, 3-d inputs, indices."""
    k = draw(st.one_of(st.integers(1, 4), st.tuples(st.integers(1, 4), st.integers(1, 4))))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pad = draw(st.one_of(st.integers(0, 2), st.tuples(st.integers(0, 2), st.integers(0, 2))))
    dil = draw(st.one_of(st.just(1), st.integers(1, 2)))
    shape = (draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 3])), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    if draw(st.integers(0, 9)) == 0:
        shape = shape[1:]
    kw = {"stride": stride, "padding": pad, "dilation": dil, "ceil_mode": draw(st.booleans())}
    if draw(st.integers(0, 5)) == 0:
        kw["return_indices"] = True
    return shape, k, kw, draw(st.sampled_from([torch.float32, torch.float64, torch.float16])), \
        len(shape) == 4 and draw(st.integers(0, 4)) == 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(_pool_case())
def test_the_max_pool_rule_gives_the_shape_of_the_real_pooling(case) -> None:
    """As for the convolution: the rule's answers are the meta kernel's and the real op's; rejections decline."""
    shape, k, kw, dtype, channels_last = case
    x = _meta(*shape, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    with torch._C.DisableTorchFunction():
        try:
            got = _meta_ops._RULES[F.max_pool2d](F.max_pool2d, (x, k), kw)
        except Exception:  # noqa: BLE001 - raising is declining too
            got = None
    try:
        want = F.max_pool2d(x, k, **kw)
        real = F.max_pool2d(torch.zeros(shape, dtype=torch.float64), k, **kw)
    except RuntimeError:
        assert got is None, case
        return
    if got is not None:
        _same(got, want)
        assert got.shape == real.shape


@st.composite
def _sdpa_case(draw):
    """Attention around the rule's case: heads split by a transpose or not (per tensor), L != S, Ev != E, other
    dtypes, causal, a scale, and outside it a mask, dropout, grouped heads, mismatched shapes, 3-d inputs."""
    b, h, L, s, e, ev = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 6)),
                         draw(st.integers(1, 6)), draw(st.sampled_from([2, 4, 8])), draw(st.sampled_from([2, 4, 6])))
    dtype = draw(st.sampled_from([torch.float32, torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    shapes = [(b, h, L, e), (b, h, s, e), (b, h, s, ev)]
    if draw(st.integers(0, 5)) == 0:  # a shape the op rejects or broadcasts
        i = draw(st.integers(0, 2))
        shapes[i] = (*shapes[i][:-1], shapes[i][-1] + 1) if draw(st.booleans()) else shapes[i][1:]
    split = [draw(st.booleans()) for _ in shapes]
    kw: dict = {"is_causal": draw(st.booleans())}
    extra = draw(st.sampled_from(["", "", "", "scale", "mask", "dropout", "gqa"]))
    if extra == "scale":
        kw["scale"] = 0.5
    elif extra == "mask":
        kw["attn_mask"], kw["is_causal"] = "mask", False
    elif extra == "dropout":
        kw["dropout_p"] = 0.1
    elif extra == "gqa":
        kw["enable_gqa"] = True
    return shapes, split, dtype, kw


@settings(max_examples=200, deadline=None, derandomize=True)
@given(_sdpa_case())
def test_the_attention_rule_gives_what_the_meta_kernel_gives(case) -> None:
    """F.scaled_dot_product_attention: the rule's answer is the meta kernel's (shape, strides, dtype) for heads
    split by a transpose or not; a mask, dropout or grouped heads, and anything the op rejects, decline."""
    shapes, split, dtype, kw = case

    def make(shape, t):
        if t and len(shape) == 4:  # (B, L, H, E) viewed as (B, H, L, E), as a transformer splits its heads
            return _meta(shape[0], shape[2], shape[1], shape[3], dtype=dtype).transpose(1, 2)
        return _meta(*shape, dtype=dtype)

    q, k, v = (make(s, t) for s, t in zip(shapes, split))
    if kw.get("attn_mask") == "mask":
        kw = {**kw, "attn_mask": _meta(q.shape[-2], k.shape[-2], dtype=dtype)}
    func = torch._C._nn.scaled_dot_product_attention
    with torch._C.DisableTorchFunction():
        try:
            got = _meta_ops._RULES[func](func, (q, k, v), dict(kw))
        except Exception:  # noqa: BLE001 - raising is declining too
            got = None
    try:
        want = F.scaled_dot_product_attention(q, k, v, **kw)
    except RuntimeError:
        assert got is None, case
        return
    if set(kw) - {"is_causal", "scale"}:
        assert got is None, case
    if got is not None:
        _same(got, want)


def test_a_meta_trace_of_a_transformer_does_not_import_dynamo() -> None:
    """The decoder's attention and embedding on the meta device need no Python decomposition (whose first call
    imports torch._dynamo, ~2 s) nor torch's symbolic-shape checks (0.5 s), checked in a fresh interpreter."""
    assert _heavy_imports_after("from decoder import decoder\n"
                                "iw.plan(decoder('tiny'), torch.randint(0, 512, (1, 16)))\n") == "False False"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.integers(1, 6), st.integers(1, 5),
       st.sampled_from([torch.int64, torch.int32, torch.int16]),
       st.sampled_from([torch.float32, torch.float64, torch.float16]), st.sampled_from([None, 0, -1, 2, 7, -9]),
       st.sampled_from(["", "", "max_norm", "transposed table", "3-d table", "scale_grad"]))
def test_the_embedding_rule_gives_what_the_meta_kernel_gives(shape, n, dim, itype, dtype, pad, extra) -> None:
    """F.embedding: the rule's answer is the meta kernel's (shape, strides, dtype) for any index shape;
    max_norm, other index dtypes and anything the op rejects decline."""
    idx = _meta(*shape, dtype=itype)
    w = _meta(dim, n, dtype=dtype).t() if extra == "transposed table" else \
        _meta(n, dim, 2, dtype=dtype) if extra == "3-d table" else _meta(n, dim, dtype=dtype)
    kw = {"padding_idx": pad}
    if extra == "max_norm":
        kw["max_norm"] = 1.0
    elif extra == "scale_grad":
        kw["scale_grad_by_freq"] = True
    with torch._C.DisableTorchFunction():
        try:
            got = _meta_ops._RULES[F.embedding](F.embedding, (idx, w), dict(kw))
        except Exception:  # noqa: BLE001 - raising is declining too
            got = None
    try:
        want = F.embedding(idx, w, **kw)
    except (RuntimeError, AssertionError, IndexError):
        assert got is None
        return
    if extra in ("max_norm", "scale_grad") or itype is torch.int16:
        assert got is None
    if got is not None:
        _same(got, want)
