"""The advisor's vocabulary: every term the report uses, defined once (``initwise advise --explain``), and what its
confidence words have meant on nets the rule was not designed on (:data:`CONFIDENCE_RECORD`)."""

from __future__ import annotations

__all__ = ["GLOSSARY", "CONFIDENCE_RECORD", "CONFIDENCE_SETS", "confidence_note"]

# How often a pick with each confidence word was within seed noise of the best after training, over every
# validation set trained blind, each with the rule frozen for it: word -> (within noise, picks). From the stored
# runs (``python benchmarks/advise_quality.py``, its last table; tests/test_evidence_record.py recomputes it).
CONFIDENCE_RECORD: dict[str, tuple[int, int]] = {"high": (9, 13), "medium": (20, 46), "low": (29, 59)}
CONFIDENCE_SETS = 10


def _record(word: str) -> str:
    k, n = CONFIDENCE_RECORD[word]
    return f"{k} of {n}"


def confidence_note(word: str) -> str:
    """What ``word`` has meant so far, for the report's recommendation line."""
    k, n = CONFIDENCE_RECORD[word]
    return (f"(so far, {k} of {n} '{word}' picks were within seed noise of the best after training, on nets "
            f"the rule was not designed on)")


GLOSSARY: dict[str, str] = {
    "fan_in": "the number of inputs that feed one output unit of a layer (in_channels/groups x kernel area for a "
              "conv). Kaiming 'fan_in' sets Var(w) = gain^2 / fan_in, which keeps the size of the signal on the "
              "forward pass (He et al. 2015, Eq. 10).",
    "fan_out": "the number of outputs one input unit feeds (out_channels/groups x kernel area, divided by the "
               "stride^2 for a transposed conv). Kaiming 'fan_out' sets Var(w) = gain^2 / fan_out, which keeps the "
               "size of the gradient on the backward pass (Eq. 14).",
    "gain": "the factor that undoes what the activation after a layer does to the signal's size: 1/sqrt(E[phi(z)^2]) "
            "for z ~ N(0, 1); sqrt(2) for ReLU, sqrt(2/(1+a^2)) for LeakyReLU(a), 1 with no activation.",
    "traced activation": "the activation initwise finds after each layer by running the model once, not the one "
                         "the layer's name suggests.",
    "second moment": "E[x^2], the mean square of a signal: its size. 'forward 0.01' means a layer's output has "
                     "1% of the input's mean square.",
    "forward / backward": "forward: the mean square of a layer's output relative to the model input's; backward: "
                          "the mean square of the gradient at a layer's output relative to the gradient arriving at "
                          "the model's output (a random unit-variance one, as in He et al.).",
    "residual branch end": "the last layer of a branch whose output is added back to its input (h + f(h)); zero-init "
                           "or a small scale there starts the block as the identity. The model's output layer is "
                           "never one, even when the input is added to it (a global residual).",
    "global residual": "the model adds its input (or an upsampled copy) to its output layer's result: the output "
                       "layer predicts a correction (VDSR, DnCNN, SRVGG, NAFNet).",
    "zero-init / res x0.1 / res x1/sqrt(blocks)": "the residual branch ends drawn at 0, 0.1 or 1/sqrt(number of "
                                                  "blocks) times the scheme's std (Goyal et al. 2017; ESRGAN).",
    "output x0.1": "the model's output layer drawn at 0.1 times the scheme's std: a small first prediction.",
    "LeCun": "Var(w) = 1/fan_in: Kaiming fan_in with gain 1.",
    "PyTorch's default": "what nn.Conv2d / nn.Linear draw when built: kaiming_uniform_(a=sqrt(5)), Var = 1/(3 fan_in).",
    "LSUV": "layer-sequential unit variance (Mishkin & Matas 2016): orthogonal weights, then each layer, in the "
            "order the model runs them, rescaled until its output on your batch has mean square 1.",
    "healthy": "no weight tensor without a gradient at step 0 (unless zero by design), nothing above 1e3 of the "
               "input's (forward) or the output's (backward), gradients within 6 decades of each other; each limit "
               "counts only when passed by 3 standard errors of the measurement. A hidden layer whose forward falls "
               "below 1e-3 of the input's is a note, not a rejection (Adam rescales each parameter's step; chosen on "
               "the design set, docs/evidence.md).",
    "initial loss": "your loss between the model's first output and your target, before any training (over "
                    "several weight draws).",
    "probe": "a few Adam steps (your learning rate) on half of your batch, then the loss on the other half: which "
             "init gets off the ground fastest with the optimizer you use (as GradInit and MetaInit do). It runs on "
             "the healthy candidate with the lowest initial loss (the screen) and on the first healthy one in the "
             "fixed order, one weight draw each. Among the best and the candidates equivalent to it, the pick is "
             "the first in the fixed order: the fixed choices ranked by their mean regret over every cell trained "
             "so far, orthogonal first (one probe draw is too noisy to separate near-equal inits; docs/evidence.md).",
    "seed noise": "the spread of a result over weight draws (or training seeds); two candidates are 'equivalent' "
                  "when their difference is within it (Welch's t-test p > 0.05) or below 25% for the pick's probe "
                  "(one draw of the probe varies by ~1.3x; 5% for the fan_in/fan_out answer's comparison).",
    "confidence": "high: no other scored candidate is equivalent to the pick and the runner-up's score is more "
                  "than 1.5x the pick's; "
                  "medium: others are within noise, or the margin is small; low: no target (no output criterion) or "
                  f"nothing healthy. Measured (docs/evidence.md) over {CONFIDENCE_SETS} validation sets trained "
                  "blind, each with the rule frozen for it: 'high' picks were within seed noise of the best after "
                  f"training in {_record('high')} cells, 'medium' in {_record('medium')}, the no-target order "
                  f"('low') in {_record('low')}. The words do not separate good picks from bad ones: read each as "
                  "'about that often on a net the rule was not designed on', and settle a close call with a "
                  "trial.",
    "not measured": "a candidate whose health advise skipped because it could not change the pick (without a "
                    "target: after the first healthy one in the fixed order; with one: neither the healthy one "
                    "with the lowest initial loss nor the first healthy one in the fixed order); pass candidates=[...] to "
                    "measure each one.",
    "regret": "in the evidence tables: the best candidate's test PSNR minus the pick's, after training.",
    "trial": "short trainings of the finalists (--trial STEPS); a short trial favours inits that start fastest.",
    "identity gate": "an optional step after the probe (advise(..., identity_gate=True); off by default): when every traced activation is ReLU-like (positively "
                     "homogeneous) and Xavier's initial loss is within 1.5x of the identity prediction's (the input "
                     "resized to the target, or a zero output for a residual target), Xavier is the pick: the model "
                     "starts at the identity with its learned part small. Chosen on 50 trained cells (11 picks changed, each "
                     "within seed noise of the best); on the 10 cells trained blind after it, within noise on 6, "
                     "the rule without it on 7, with a higher mean regret: so it is off by default "
                     "(docs/evidence.md, \"Ninth session\").",
    "structured kernel": "a weight that the model's own init set to a fixed pattern instead of a random draw: "
                         "bilinear upsampling (LapSRN's, FCN's transposed convs), a scaled identity (dirac_, eye_, "
                         "a mean-shift conv), a few-valued kernel. Every candidate that draws keeps it "
                         "(structured='keep'): redrawing it throws away what it already does.",
}
