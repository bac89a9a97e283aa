"""The meta pass's memo of shape-only op results (initwise._meta_ops): same metadata as calling the op, or the op runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from initwise import _meta_ops


def _meta(*shape: int, **kw) -> torch.Tensor:
    return torch.empty(*shape, device="meta", **kw)


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
