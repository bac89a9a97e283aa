"""``initwise fans``: effective fans, gains and resulting Kaiming stds per layer of a model."""

from __future__ import annotations

import argparse
import math

from torch import nn

import initwise as iw

from ._target import DEFAULT_SHAPE, check_rank, check_single_input, load_target, make_input, parse_shape
from .main import CLIError, describe, plain

EPILOG = """examples:
  initwise fans                              # the built-in example: an FSRCNN-like x2 super-resolution net
  initwise fans edsr                         # every layer of a built-in model, activations traced
  initwise fans my_model.py:build --input 1x3x48x48

TARGET: a built-in model, path/to/file.py:factory or package.module:factory (as for advise and diagnose). The
model is traced once on a random input (or the factory's example) to find the activation after every layer.
"""


def example_model() -> list[tuple[str, nn.Module, str]]:
    """A small SR net whose layers show every fan correction: thin first layer, PReLU, depthwise, transposed."""
    return [
        ("feature", nn.Conv2d(3, 56, 5, padding=2), "prelu"),
        ("shrink", nn.Conv2d(56, 12, 1), "prelu"),
        ("map.depthwise", nn.Conv2d(12, 12, 3, padding=1, groups=12), "linear"),
        ("map.pointwise", nn.Conv2d(12, 12, 1), "prelu"),
        ("expand", nn.Conv2d(12, 56, 1), "prelu"),
        ("deconv", nn.ConvTranspose2d(56, 3, 9, stride=2, padding=4, output_padding=1), "linear"),
    ]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fans", help="fans, gains and Kaiming stds per layer of any model (or a built-in example)",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", default=None, metavar="TARGET",
                   help="built-in model name, path/to/file.py:factory or package.module:factory (default: the "
                   "built-in example)")
    p.add_argument("--input", metavar="SHAPE", help="input shape for the trace, e.g. 1x3x48x48 (default: the "
                   "built-in model's example shape, the factory's example, or "
                   f"{'x'.join(map(str, DEFAULT_SHAPE))})")
    p.set_defaults(func=run)


def _rows_of_target(args: argparse.Namespace) -> list[tuple[str, ...]]:
    shape = parse_shape(args.input) if args.input is not None else None
    target = load_target(args.target)
    if shape is not None or target.example is None:
        shape = shape or target.shape or DEFAULT_SHAPE
        check_single_input(target, f"--input {'x'.join(map(str, shape))}")
        check_rank(shape, target.model)
        example = make_input(shape, 0, like=target.model)
    else:
        example = target.example
    try:
        plan = iw.plan(target.model, example, "kaiming", "fan_in")
    except Exception as e:  # the user's forward may raise anything (an assert, an IndexError)
        raise CLIError(f"tracing {args.target} failed: {describe(e)}") from e
    rows = []
    for lp in plan.layers:
        f, g = lp.fans, lp.gain
        if f is None or g is None:
            continue
        rows.append(_row(lp.name or "(model)", lp.type, lp.activation, f, g))
    if not rows:
        raise CLIError(f"{args.target} has no layer with a weight of 2 or more dimensions")
    return rows


def _row(name: str, kind: str, act: str, f: iw.Fans, g: float) -> tuple[str, ...]:
    return (name, kind, act, f"{f.fan_in:g}", f"{f.fan_out:g}", f"{f.torch_fan_in:g}/{f.torch_fan_out:g}",
            f"{g:.4f}", f"{g / math.sqrt(f.fan_in):.4f}", f"{g / math.sqrt(f.fan_out):.4f}")


def run(args: argparse.Namespace) -> int:
    rows = [("layer", "type", "act", "fan_in", "fan_out", "torch in/out", "gain", "std in", "std out")]
    if args.target is None:
        if args.input is not None:
            raise CLIError("--input needs a TARGET (the built-in example has no input)")
        rows += [_row(name, type(layer).__name__, act, iw.fans(layer), iw.gain(act))
                 for name, layer, act in example_model()]
    else:
        rows += _rows_of_target(args)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nfans are layer-aware (groups, transposition, stride); 'torch in/out' is what torch.nn.init reads from "
          "the shape;\ngain: Kaiming gain of the activation after the layer (traced); std = gain / sqrt(fan).")
    return 0
