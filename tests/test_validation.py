"""Bad inputs to the library: a TypeError/ValueError naming the parameter (and the layer), the model unchanged.

Issue 12's library cases and their siblings; each case checks the message and that nothing was written.
"""

import math

import pytest
import torch
from torch import nn

import initwise as iw
from initwise._fans import tensor_fans


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in before)


# --- tensor_fans -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, err, words", [
    ({"in_axis": 5}, ValueError, ["in_axis=5", "out of range", "(4, 6)"]),
    ({"out_axis": -3}, ValueError, ["out_axis=-3", "out of range"]),
    ({"in_axis": 1.0}, TypeError, ["in_axis", "int"]),
    ({"groups": True}, ValueError, ["groups"]),
    ({"transposed": "yes"}, TypeError, ["transposed", "bool"]),
])
def test_tensor_fans_rejects_bad_layout(kw, err, words):
    with pytest.raises(err) as e:
        tensor_fans(torch.empty(4, 6), **kw)
    for w in words:
        assert w in str(e.value)


def test_tensor_fans_negative_axes_in_range_still_work():
    f = tensor_fans(torch.empty(4, 6, 3), in_axis=-2, out_axis=-3)
    assert (f.fan_in, f.fan_out) == (18.0, 12.0)


def test_tensor_fans_non_tensor_is_a_type_error():
    with pytest.raises(TypeError, match="tensor_fans.*torch.Tensor.*list"):
        tensor_fans([[1.0, 2.0]])


# --- numeric gain and scales -----------------------------------------------------------------------------------

@pytest.mark.parametrize("gain", [-1.0, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("call", ["plan", "init_"])
def test_numeric_gain_must_be_finite_and_non_negative(gain, call):
    net, x = _net(), torch.randn(3, 4)
    before = _state(net)
    with pytest.raises(ValueError, match=r"^gain must be a finite number >= 0"):
        getattr(iw, call)(net, x, gain=gain)
    assert _same(net, before)


@pytest.mark.parametrize("opt", ["gain", "output_scale"])
def test_huge_gain_names_the_option_and_the_layer_no_overflow_error(opt):
    net, x = _net(), torch.randn(3, 4)
    before = _state(net)
    with pytest.raises(ValueError) as e:
        iw.init_(net, x, **{opt: 1e300})
    msg = str(e.value)
    layer = "0" if opt == "gain" else "2"  # the output scale applies to the output layer only
    assert f"{opt}=1e+300" in msg and f"'{layer}.weight'" in msg and f"layer '{layer}'" in msg and "float32" in msg
    assert _same(net, before)


def test_gain_that_overflows_float16_only_is_caught_per_dtype():
    """gain 1e10 is fine in float32 (std ~5e9) but its draws overflow float16 (max 65504)."""
    x = torch.randn(3, 4)
    assert iw.plan(_net(), x, gain=1e10)["0"].std == pytest.approx(1e10 / 2)
    half = _net().half()
    with pytest.raises(ValueError, match=r"gain=10000000000.0 .*'0.weight'.*float16"):
        iw.plan(half, x.half(), gain=1e10)


@pytest.mark.parametrize("bad, err", [(True, TypeError), ("bogus", ValueError), (object(), TypeError)])
def test_non_numeric_gain_errors_name_gain(bad, err):
    with pytest.raises(err, match="gain"):
        iw.plan(_net(), torch.randn(3, 4), gain=bad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("dist", ["normal", "uniform", "truncated_normal"])
def test_variance_scaling_never_fills_inf(dtype, dist):
    t = torch.zeros(8, 8, dtype=dtype)
    with pytest.raises(ValueError, match=r"scale=1e\+300 is too large for"):
        iw.variance_scaling_(t, 1e300, distribution=dist)
    assert torch.count_nonzero(t) == 0  # nothing written


def test_variance_scaling_largest_float16_scale_that_fits_stays_finite():
    """scale just under the limit (10 std below float16's max) draws finite values; just above is refused."""
    fan = 64.0
    ok = (65504 / 10) ** 2 * fan * 0.99
    t = iw.variance_scaling_(torch.empty(64, 64, dtype=torch.float16), ok)
    assert torch.isfinite(t).all()
    with pytest.raises(ValueError):
        iw.variance_scaling_(torch.empty(64, 64, dtype=torch.float16), ok * 1.03)


@pytest.mark.parametrize("fn", [iw.xavier_normal_, iw.xavier_uniform_, iw.orthogonal_, iw.identity_])
def test_gain_initializers_refuse_overflowing_gain(fn):
    t = torch.zeros(4, 4)
    with pytest.raises(ValueError, match=r"gain=1e\+200 is too large"):
        fn(t, 1e200)
    assert torch.count_nonzero(t) == 0


def test_truncated_normal_with_huge_bound_is_a_normal():
    t = iw.variance_scaling_(torch.empty(20000, 1, dtype=torch.float64), 1.0, "fan_in", "truncated_normal",
                             bound=1e300)
    # fan_in 1 -> std 1 (untruncated); the sample variance's SE is sqrt(2/n) = 0.01
    assert abs(float(t.var()) - 1.0) < 5 * math.sqrt(2 / t.numel())


# --- exclude, seeds ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [5, 1.5, {"0": 1}.keys(), [1, "0"]])
def test_exclude_must_be_patterns(bad):
    with pytest.raises(TypeError, match="exclude"):
        iw.plan(_net(), torch.randn(3, 4), exclude=bad)


def test_exclude_none_means_nothing_excluded():
    p = iw.plan(_net(), torch.randn(3, 4), exclude=None)
    assert all(pp.method != "keep" for pp in p.params)


@pytest.mark.parametrize("seed, err", [(1.5, TypeError), ("0", TypeError), (True, TypeError), (-1, ValueError),
                                       (2**80, ValueError)])
def test_advise_seed_is_checked_first(seed, err):
    net = _net()
    before = _state(net)
    with pytest.raises(err, match="seed"):
        iw.advise(net, torch.randn(3, 4), seed=seed, seeds=1)
    assert _same(net, before)


def test_advise_finalists_must_be_positive():
    with pytest.raises(ValueError, match="finalists"):
        iw.advise(_net(), torch.randn(3, 4), finalists=0, seeds=1)


# --- weight dtypes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64])
@pytest.mark.parametrize("call", ["plan", "init_"])
def test_non_float_weight_names_parameter_and_layer(dtype, call):
    net = _net()
    net[2].weight = nn.Parameter(torch.ones(2, 4, dtype=dtype), requires_grad=False)
    before = _state(net)
    with pytest.raises(TypeError) as e:
        getattr(iw, call)(net, torch.randn(3, 4))
    msg = str(e.value)
    assert "'2.weight'" in msg and "layer '2'" in msg and "Linear" in msg and str(dtype) in msg
    assert _same(net, before)


def test_non_float_weight_can_be_excluded_or_kept():
    net = _net()
    net[2].weight = nn.Parameter(torch.ones(2, 4, dtype=torch.int64), requires_grad=False)
    before = net[2].weight.clone()
    iw.init_(net, torch.randn(3, 4), exclude=["2.weight"], seed=0)
    assert torch.equal(net[2].weight, before)
    assert iw.plan(net, torch.randn(3, 4), "current")["2"].params[0].method == "keep"


# --- advise target -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fill", [math.nan, math.inf])
@pytest.mark.parametrize("count", ["all", "one"])
def test_advise_non_finite_target_is_refused(fill, count):
    tgt = torch.zeros(3, 2)
    if count == "all":
        tgt.fill_(fill)
    else:
        tgt[1, 1] = fill
    net, x = _net(), torch.randn(3, 4)
    before = _state(net)
    rng = torch.get_rng_state()
    with pytest.raises(ValueError, match=r"target has \d+ non-finite value"):
        iw.advise(net, x, target=tgt, seeds=1)
    assert _same(net, before) and torch.equal(torch.get_rng_state(), rng)


def test_advise_target_must_be_a_tensor():
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        iw.advise(_net(), torch.randn(3, 4), target=[[0.0, 0.0]] * 3, seeds=1)


@pytest.mark.parametrize("call", ["diagnose", "advise"])
def test_non_finite_example_is_refused_before_any_run(call):
    net = _net()
    before = _state(net)
    x = torch.randn(3, 4)
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"the example input has 1 non-finite value\(s\).*\(3, 4\)"):
        getattr(iw, call)(net, x) if call == "diagnose" else iw.advise(net, x, seeds=1)
    assert _same(net, before)


@pytest.mark.parametrize("key", ["zero_init_residual", "icnr"])
@pytest.mark.parametrize("bad", ["no", "false", 2, None])
def test_switches_must_be_bools(key, bad):
    """bool('no') is True: a string would silently switch zero-init or ICNR on."""
    with pytest.raises(TypeError, match=f"{key} must be True or False"):
        iw.plan(_net(), torch.randn(3, 4), **{key: bad})


def test_switches_accept_bools_and_0_1():
    for v in (True, False, 0, 1):
        iw.plan(_net(), torch.randn(3, 4), zero_init_residual=v, icnr=v)


# --- entry points: the model's type; a real forward that fails names the layer --------------------------------

@pytest.mark.parametrize("call", [iw.trace, iw.plan, iw.init_, iw.lsuv_, iw.diagnose, iw.advise])
def test_a_model_that_is_not_a_module_is_a_type_error(call):
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        call("model", torch.randn(2, 4))


@pytest.mark.parametrize("name", ["diagnose", "lsuv_"])
def test_a_forward_that_fails_only_on_real_tensors_names_the_layer(name):
    """The trace runs on the meta device, where a float64 input to a float32 Linear passes; the real forward of
    diagnose (and LSUV's passes) fails in torch: the error says in which layer, on what input."""
    net = _net()
    before = _state(net)
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError) as e:
        if name == "diagnose":
            iw.diagnose(net, x, schemes=["kaiming"])
        else:
            iw.lsuv_(net, x)
    msg = str(e.value)
    assert msg.startswith("forward failed in '0' (Linear, input 3x4): RuntimeError: "), msg
    assert "Double" in msg and "Float" in msg
    if name == "diagnose":  # (lsuv_ is an init_: it has drawn the weights before its first pass)
        assert _same(net, before)


def test_batch_norm_at_batch_one_names_the_layer_in_diagnose():
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(RuntimeError, match=r"forward failed in '1' \(BatchNorm1d, input 1x4\): ValueError: Expected"):
        iw.diagnose(net, torch.randn(1, 4))


def test_diagnose_of_a_meta_device_model_names_the_tensor():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).to("meta")
    with pytest.raises(ValueError, match=r"^0\.weight is on the meta device: diagnose measures real"):
        iw.diagnose(net, torch.randn(2, 4))
    assert all(p.is_meta for p in net.parameters())
