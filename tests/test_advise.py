"""advise(): decisions on real SR/denoise models and real image patches, reasons, non-mutation, apply, trial, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import initwise as iw
from initwise import zoo
from initwise._advise_rule import PRIOR, PROBE_PRIOR, SCREEN, TIE
from initwise._cli.main import main
from initwise.bench.data import get_task




def _sr_batch(n: int = 4, patch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return get_task("sr-x2").train_batch(n, patch, torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def edsr_advice() -> tuple[nn.Module, torch.Tensor, torch.Tensor, iw.Advice]:
    torch.manual_seed(0)
    model = zoo.build("edsr", scale=2, n_resblocks=2, n_feats=8)
    x, y = get_task("sr-x2").train_batch(4, 24, torch.Generator().manual_seed(0))
    return model, x, y, iw.advise(model, x, target=y, seeds=2, probe_steps=2)


def test_edsr_advice_is_healthy_and_ranked_by_the_probe(edsr_advice) -> None:
    model, x, y, adv = edsr_advice
    best = adv.result(adv.recommended.name)
    assert best.healthy and best.rank == 1 and adv.score == "probe"
    probed = [r for r in adv.results if r.probe]
    low = min(probed, key=lambda r: r.probe_loss)
    if low.name != best.name:  # the tie-break: equivalent to the lowest, and first in PRIOR among them
        assert best.probe_loss <= low.probe_loss * (1 + TIE) and low.name in adv.equivalent
        assert PRIOR.index(best.name) < (PRIOR.index(low.name) if low.name in PRIOR else len(PRIOR))
        assert f"{low.name} had the lowest" in " ".join(adv.reasons)
    # the probe ran on the `screen` healthy candidates with the lowest initial loss and (PROBE_PRIOR) on the first
    # healthy candidate in PRIOR's order beside them, no others
    healthy = sorted((r for r in adv.results if r.healthy), key=lambda r: r.init_loss)
    screen = [r.name for r in healthy[:adv.screen]]
    first = [n for n in PRIOR if n not in screen and any(r.name == n and r.healthy for r in adv.results)][:1]
    assert adv.screen == SCREEN and {r.name for r in probed} == set(screen) | (set(first) if PROBE_PRIOR else set())
    assert all(len(r.losses) == 2 for r in adv.results)  # every candidate has its initial loss
    # the initial loss is measured independently here: the recommended init, applied, against the real HR patches
    m2 = zoo.build("edsr", scale=2, n_resblocks=2, n_feats=8)
    adv.apply(m2, x)
    with torch.no_grad():
        loss = float((m2(x) - y).abs().mean())
    assert min(best.losses) - 1e-9 <= loss <= max(best.losses) + 1e-9
    assert adv.target_kind == "given target"
    text = str(adv)
    # the answers come first, in the order people ask them
    heads = ["fan_in or fan_out?", "Which nonlinearity / gain?", "Residual branches?", "Recommended init:",
             "Your current init?", "Why:"]
    assert text.startswith(heads[0]) and [text.index(h) for h in heads] == sorted(text.index(h) for h in heads)
    assert "head (27 in, 72 out" in text and "PixelShuffle" in text and "residual branch" in text
    assert "initwise advise --explain" in text
    assert adv.answers["code"] in text and adv.answers["current_init"]["candidate"] == "default"
    assert "for the weights it holds now" in adv.answers["current_init"]["text"]  # not the scheme's average
    fan = adv.answers["fan_mode"]
    assert {d["layer"] for d in fan["layers"]} >= {"head", "tail.1"} and fan["safer"] in ("fan_in", "fan_out")


def test_fan_answer_claims_seed_noise_only_from_the_draws(edsr_advice) -> None:
    """The fan_in/fan_out sentence says "beyond seed noise" only when a Welch test on the draws (scipy's, not ours)
    finds it, and never calls a difference that the draws cannot resolve "within seed noise"."""
    from scipy import stats

    _, _, _, adv = edsr_advice
    text = adv.answers["fan_mode"]["text"]
    by = {r.name: r for r in adv.results}
    fi, fo = by["kaiming_fan_in"], by["kaiming_fan_out"]
    assert fi.healthy == fo.healthy  # otherwise the answer is the health check's, tested elsewhere
    probe = adv.score == "probe" and fi.probe_loss is not None and fo.probe_loss is not None
    a, b = (list(r.probe) if probe else list(r.losses) for r in (fi, fo))
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    assert f"{ma:.3g} under fan_in and {mb:.3g} under fan_out" in text
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    close = max(ma, mb) <= 1.05 * min(ma, mb)
    assert ("beyond seed noise (" in text) == (p < 0.05 and not close)
    assert "within seed noise" not in text
    if not close and p >= 0.05:
        assert f"Welch p = {p:.2g}" in text and "not established" in text and not adv.answers["fan_mode"]["matters"]


def test_advice_json_round_trip(edsr_advice) -> None:
    _, _, _, adv = edsr_advice
    d = json.loads(adv.to_json())
    assert d["recommended"]["name"] == adv.recommended.name
    assert [c["name"] for c in d["candidates"]] == adv.candidates
    assert d["candidates"][0]["init_loss"] == pytest.approx(adv.results[0].init_loss)
    assert set(d["profile"]["schemes"]) == {r.name for r in adv.results if r.checked}
    assert set(d["answers"]) == {"fan_mode", "gain", "residual", "code", "current_init"}
    assert d["answers"]["fan_mode"]["text"] in " ".join(str(adv).split())


def test_apply_is_reproducible_and_equals_init_with_the_recommended_kwargs(edsr_advice) -> None:
    _, x, _, adv = edsr_advice
    a, b, c = (zoo.build("edsr", scale=2, n_resblocks=2, n_feats=8) for _ in range(3))
    adv.apply(a, x)
    adv.apply(b, x)
    adv.recommended.init_(c, x, seed=adv.draw_seed)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb) and torch.equal(va, vc), k


def test_deep_plain_dncnn_rejects_the_vanishing_pytorch_default() -> None:
    """A 12-layer DnCNN without BN under PyTorch's default: the signal through the branch decays ~6x per layer (Var
    1/(3 fan_in), halved by ReLU), so the first layer's gradient is ~1e-10 of the output's (measured)."""
    torch.manual_seed(0)
    model = zoo.build("dncnn", bn=False, depth=12, n_feats=16)
    x, y = get_task("denoise-s25").train_batch(2, 32, torch.Generator().manual_seed(0))
    adv = iw.advise(model, x, target=y, seeds=3, probe_steps=2,
                    candidates=["default", "kaiming_fan_in", "kaiming_fan_in_out0.1"])
    default = adv.result("default")
    assert not default.healthy
    assert default.min_backward < 1e-6 and any("vanishes" in p or "decades" in p for p in default.problems)
    assert adv.recommended.name != "default"
    assert any("default rejected" in r for r in adv.reasons)


def test_advise_leaves_the_model_untouched() -> None:
    model = zoo.build("dncnn", bn=True, depth=5, n_feats=8)
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    hook = model.register_forward_hook(lambda *a: None)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    x, y = get_task("denoise-s25").train_batch(2, 24, torch.Generator().manual_seed(1))
    iw.advise(model, x, target=y, seeds=2, probe_steps=2, candidates=["default", "kaiming_fan_in", "lsuv"])
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert len(model._forward_hooks) == 1
    hook.remove()


def test_trial_overrides_the_analysis_when_it_is_significant() -> None:
    """A trial that rewards large first-layer weights must override an analysis that picked small ones."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
    x = torch.rand(4, 3, 16, 16)
    cands = ["default", "lecun", "kaiming_fan_in"]
    plain = iw.advise(model, x, seeds=2, candidates=cands)

    def trial(m: nn.Module, seed: int) -> float:
        return float(m[0].weight.detach().pow(2).mean().sqrt())  # Kaiming fan_in's first layer is the largest

    adv = iw.advise(model, x, seeds=2, candidates=cands, trial=trial, trial_seeds=4, finalists=3)
    scores = {r.name: r.trial_mean for r in adv.results if r.trial_mean is not None}
    assert len(scores) == 3
    assert max(scores, key=scores.get) == "kaiming_fan_in"
    assert adv.recommended.name == "kaiming_fan_in"
    if plain.recommended.name != "kaiming_fan_in":
        assert any("overrides" in r for r in adv.reasons[:2])


def test_without_a_target_there_is_no_output_criterion_and_it_says_so() -> None:
    img = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    adv = iw.advise(img, torch.rand(2, 3, 12, 12), seeds=2, candidates=["default", "kaiming_fan_in"])
    assert adv.target_kind == "none" and adv.confidence == "low" and adv.score is None
    assert all(r.init_loss is None and not r.losses and not r.probe for r in adv.results)
    assert adv.reasons[0].startswith("no target given")
    assert "no target: no output criterion" in str(adv)


def test_a_classifier_takes_labels_and_cross_entropy() -> None:
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    x, labels = torch.randn(16, 10), torch.randint(0, 4, (16,))
    adv = iw.advise(clf, x, target=labels, seeds=2, probe_steps=2, candidates=["default", "kaiming_fan_in"])
    assert adv.target_kind == "labels"
    r = adv.result("kaiming_fan_in")
    m = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    iw.candidate("kaiming_fan_in").init_(m, x, generator=torch.Generator().manual_seed(1))  # the advisor's draw 0
    with torch.no_grad():
        assert r.losses[0] == pytest.approx(float(torch.nn.functional.cross_entropy(m(x), labels)), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        iw.advise(clf, x, target=torch.randint(0, 4, (16, 4)), candidates=["default"])


class _GlobalSkip(nn.Module):
    """DnCNN without BN: the output conv's result is subtracted from the input (a global residual)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.body(x)


def test_health_counts_weight_tensors_with_a_gradient_and_rejects_a_zeroed_output_layer() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 1, 12, 12)
    adv = iw.advise(_GlobalSkip(), x, seeds=1, candidates=["kaiming_fan_in", "kaiming_fan_in_zero_res",
                                                           "kaiming_fan_in:output_scale=0"])
    fixed, zeroed = adv.result("kaiming_fan_in_zero_res"), adv.result("kaiming_fan_in:output_scale=0")
    # zero-init no longer touches the output conv: every weight tensor gets a gradient
    assert fixed.healthy and (fixed.grads_live, fixed.grads_total) == (3, 3) and not fixed.zero_by_design
    # zeroing the output conv (what zero_res did before) leaves the output equal to the input: only the output
    # conv itself gets a gradient, and the health check says so
    assert not zeroed.healthy and (zeroed.grads_live, zeroed.grads_total) == (1, 3)
    assert any("no gradient at step 0" in p and "1 of 3" in p for p in zeroed.problems)


def test_zero_init_branch_ends_are_zero_by_design_not_dead() -> None:
    torch.manual_seed(0)
    model = zoo.build("edsr", scale=2, n_resblocks=2, n_feats=8)
    x, y = _sr_batch(2, 24)
    adv = iw.advise(model, x, seeds=1, candidates=["kaiming_fan_in_zero_res"])
    r = adv.results[0]
    assert r.healthy and r.grads_live < r.grads_total
    # the block ends and the long skip's last conv (body.2) are zeroed; the blocks' first convs feed only zeroed
    # layers: all get a gradient once the zeroed ones have taken one step
    assert set(r.zero_by_design) == {"body.0.body.0", "body.0.body.2", "body.1.body.0", "body.1.body.2", "body.2"}
    # of those, only body.2 gets a gradient at step 0 (its input is live; everything before it feeds a zero)
    assert r.grads_live == r.grads_total - len(r.zero_by_design) + 1


def test_trial_with_one_seed_reports_without_a_significance_claim() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 3, padding=1))
    x = torch.rand(4, 3, 16, 16)
    cands = ["default", "kaiming_fan_in", "lecun", "xavier"]
    adv = iw.advise(model, x, seeds=1, candidates=cands, trial=lambda m, s: float(m[0].weight.detach().std()),
                    trial_seeds=1, finalists=2, trial_steps=7)
    text = " ".join(adv.reasons)
    assert "Welch" not in text and "one seed" in text and "7 steps" in text and "start fastest" in text
    trained = {r.name for r in adv.results if r.trial_scores}
    assert len(trained) == 2 and set(adv.equivalent) <= trained


def test_bad_input() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    x = torch.randn(3, 4)
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="nn.Module"):
        iw.advise("model", x)
    with pytest.raises(ValueError, match="seeds"):
        iw.advise(model, x, seeds=0)
    with pytest.raises(TypeError, match="trial"):
        iw.advise(model, x, trial=3)
    with pytest.raises(ValueError, match=r"target has shape \(3, 5\).*\(3, 4\)"):
        iw.advise(model, x, target=torch.zeros(3, 5), seeds=1, candidates=["default"])
    with pytest.raises(ValueError, match="unknown candidate"):
        iw.advise(model, x, candidates=["nope"])
    with pytest.raises(RuntimeError, match="'0'"):
        iw.advise(model, torch.randn(3, 7))
    assert all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


# ---------------------------------------------------------------- command line

def test_cli_advise_builtin_writes_json_plot_and_saves_the_recommended_init(tmp_path, capsys) -> None:
    out, js, png = tmp_path / "init.pt", tmp_path / "a.json", tmp_path / "spp.png"
    rc = main(["advise", "espcn", "--batch", "2", "--patch", "24", "--seeds", "2", "--probe-steps", "2", "--json",
               str(js), "--plot", str(png), "--save", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "fan_in or fan_out?" in text and "Recommended init:" in text and "Facts of this model:" in text
    d = json.loads(js.read_text())
    assert d["target"] == "espcn" and d["recommended"]["name"] in [c["name"] for c in d["candidates"]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = torch.load(out)
    ref = zoo.build("espcn", scale=2)
    x, _ = get_task("sr-x2", channels=1).train_batch(2, 24, torch.Generator().manual_seed(0))
    iw.candidate(d["recommended"]["name"]).init_(ref, x, seed=1)  # draw 0 of seed 0: advice.draw_seed
    assert all(torch.equal(saved[k], v) for k, v in ref.state_dict().items())


def test_cli_advise_explain_defines_every_term(capsys) -> None:
    from initwise._advise_answers import GLOSSARY

    assert main(["advise", "--explain"]) == 0
    text = capsys.readouterr().out
    assert all(term in text for term in GLOSSARY) and "fan_out" in text


def test_cli_advise_errors(tmp_path, capsys) -> None:
    assert main(["advise", "espcn", "--candidates", "bogus"]) == 2
    assert "unknown candidate" in capsys.readouterr().err
    model_file = tmp_path / "m.py"
    model_file.write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Conv2d(3, 3, 3))\n")
    assert main(["advise", f"{model_file}:build", "--input", "2x3x16x16", "--trial", "5"]) == 2
    assert "--trial trains on built-in task data" in capsys.readouterr().err
    assert main(["advise", "espcn", "--seeds", "0"]) == 2
    assert main(["advise", "espcn", "--batch", "2", "--patch", "24", "--seeds", "1",
                 "--save", str(tmp_path / "missing" / "x.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["advise", f"{model_file}:nope"]) == 2
    assert "no factory 'nope'" in capsys.readouterr().err


def test_lazy_health_measures_only_what_can_change_the_pick() -> None:
    """Generated candidates without a target: health in the fixed order until one passes, plus the answers'
    candidates; the pick is the one that measuring every candidate gives."""
    torch.manual_seed(0)
    model = zoo.build("vdsr", depth=4, n_feats=8)
    x, _ = get_task("sr-x2", channels=1).train_batch(4, 16, torch.Generator().manual_seed(0), upsample=True)
    lazy = iw.advise(model, x)
    full = iw.advise(model, x, candidates=[iw.candidate(n) if n in iw.CANDIDATES else c for n, c in
                                           ((c.name, c) for c in iw.generate_candidates(model, x))])
    assert all(r.checked for r in full.results) and lazy.candidates and set(lazy.candidates) == set(full.candidates)
    assert lazy.recommended.name == full.recommended.name
    checked = {r.name for r in lazy.results if r.checked}
    assert {"kaiming_fan_in", "kaiming_fan_out", "default", lazy.recommended.name} <= checked
    assert checked < set(lazy.candidates)  # some were skipped, and said so
    skipped = [r for r in lazy.results if not r.checked]
    assert all(not r.healthy and not r.problems for r in skipped)
    for r in lazy.results:  # what was measured agrees with the full run
        if r.checked:
            assert r.healthy == full.result(r.name).healthy, r.name
    assert "not measured" in str(lazy)


def test_welch_p_matches_scipy_without_importing_it() -> None:
    """The advisor's Welch test (pure Python incomplete beta) against scipy's ttest_ind(equal_var=False) and t.sf."""
    stats = pytest.importorskip("scipy.stats")
    from initwise._advise_rule import t_two_sided, welch_p

    g = torch.Generator().manual_seed(3)
    for n1, n2, shift in ((2, 2, 0.5), (2, 5, 3.0), (4, 4, 0.0), (3, 8, 1.0), (10, 10, 0.2), (5, 3, 20.0)):
        a = (torch.randn(n1, generator=g, dtype=torch.float64) * 2).tolist()
        b = (torch.randn(n2, generator=g, dtype=torch.float64) + shift).tolist()
        want = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        assert welch_p(a, b) == pytest.approx(want, rel=1e-9, abs=1e-15), (n1, n2, shift)
    for t in (0.0, 0.3, 1.0, 2.5, 7.0, 40.0):
        for df in (1.0, 1.7, 3.0, 12.5, 200.0):
            assert t_two_sided(t, df) == pytest.approx(2 * float(stats.t.sf(t, df)), rel=1e-9, abs=1e-300)


def test_probe_adam_matches_torch_adam_step_for_step():
    # the probe's optimizer (no torch.optim, whose first construction imports torch._dynamo) is torch's Adam
    from initwise._advise_evidence import Adam

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 2, 3, padding=1),
                          nn.Linear(4, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    unused = [nn.Parameter(torch.randn(3)) for _ in range(2)]  # never gets a gradient: left alone by both
    unused[1].data.copy_(unused[0].data)
    ours = Adam([*nets[0].parameters(), unused[0]], 3e-3)
    theirs = torch.optim.Adam([*nets[1].parameters(), unused[1]], lr=3e-3)
    x = torch.randn(5, 2, 4, 4)
    for step in range(12):
        for net, opt in ((nets[0], ours), (nets[1], theirs)):
            opt.zero_grad(set_to_none=True)
            net[3].weight.requires_grad_(step >= 4)  # a parameter whose first gradient comes late: its own count
            net(x).pow(2).mean().backward()
            opt.step()
        for a, b in zip(nets[0].parameters(), nets[1].parameters()):
            assert torch.equal(a, b), step
    assert torch.equal(unused[0], unused[1])


def test_prefer_prior_picks_the_first_in_prior_among_equivalents_and_says_so() -> None:
    """Candidates the probe cannot tell apart (within TIE): the one first in PRIOR's order is the pick, the
    score's best becomes an equivalent, ranks follow, and the reasons name the candidate with the lowest loss."""
    from initwise._advise_answers import reasons
    from initwise._advise_evidence import CandidateResult
    from initwise._advise_rule import equivalent, prefer_prior, rank

    def res(name: str, probe: float) -> CandidateResult:
        r = CandidateResult(name, "", 0.5, 0.0, None, None, 0.5, 2.0, 1.0, 1.0, True, probe=[probe])
        r.probe_loss = probe
        return r

    first, later = PRIOR[0], "xavier"
    assert PRIOR.index(first) < PRIOR.index(later)
    rs = [res("default", 0.2), res(first, 0.1 * (1 + TIE / 2)), res(later, 0.1)]
    rank(rs, "probe")
    eq = equivalent(rs, "probe")
    assert rs[0].name == later and eq == [first]
    eq2, scored_first = prefer_prior(rs, eq)
    assert [r.name for r in rs] == [first, later, "default"] and [r.rank for r in rs] == [1, 2, 3]
    assert eq2 == [later] and scored_first == later
    why = reasons(rs, eq2, "given target", "probe", 5, 1e-3, scored_first)
    assert why[0].startswith(f"{later} had the lowest held-out loss after the probe (0.1)")
    assert why[1].startswith("its loss on held-out patches after 5 Adam steps")
    # beyond the tie band nothing moves; the score's best first in PRIOR stays the pick
    rs = [res(later, 0.1), res(first, 0.1 * (1 + 2 * TIE))]
    rank(rs, "probe")
    assert equivalent(rs, "probe") == [] and prefer_prior(rs, []) == ([], None) and rs[0].name == later
    rs = [res(first, 0.1), res(later, 0.1)]
    rank(rs, "probe")
    assert prefer_prior(rs, equivalent(rs, "probe")) == ([later], None) and rs[0].name == first


class _Scaled(nn.Module):
    """RCAN/EDSR-style: the input multiplied by rgb_range = 255 before a MeanShift-like 1x1 conv whose
    ``requires_grad = False`` is set on the module (which freezes nothing), divided back at the end."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.sub = nn.Conv2d(1, 1, 1)
        self.sub.requires_grad = False
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.sub(x * self.scale)) / self.scale


def test_a_fixed_input_scale_is_not_an_exploding_init_and_the_report_says_so() -> None:
    from initwise._advise_evidence import health, lead_scale

    torch.manual_seed(0)
    x = torch.rand(4, 1, 12, 12)
    model = _Scaled(255.0)
    name, lead = lead_scale(model, x, iw.trace(model, x))
    assert name == "sub" and lead == pytest.approx(255.0**2, rel=1e-6)  # x * 255 (float32) enters the first layer
    adv = iw.advise(model, x)
    measured = [r for r in adv.results if r.checked]
    assert adv.result(adv.recommended.name).healthy
    assert not any("explodes" in p for r in measured for p in r.problems)
    # judged against the model's input, the same measurements explode: the model's own factor, not the init
    runs = adv.profile.runs
    assert any(p.startswith("forward explodes: ") for r in runs for p in health(r)[3])
    assert not any("explodes" in p for r in runs for p in health(r, lead=(name, lead))[3])
    text = "\n".join(adv.facts)
    assert "'sub' receives 6.5e+04x the input's mean square" in text
    assert "sub set `requires_grad = False` on the module, which freezes none of its parameters" in text
    plain = iw.advise(_Scaled(1.0), x)
    assert not any("receives" in f for f in plain.facts)


def test_meta_device_model_is_a_clear_error_naming_the_tensor() -> None:
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"^0\.weight is on the meta device: advise measures"):
        iw.advise(net, x)
    assert all(p.is_meta for p in net.parameters())


def test_integer_labels_of_the_outputs_shape_say_which_shape_labels_need() -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"integer labels \(class indices\) need shape \(3,\)"):
        iw.advise(net, x, target=torch.zeros(3, 2, dtype=torch.long))
