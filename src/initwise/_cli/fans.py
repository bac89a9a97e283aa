"""``initwise fans``: effective fans, gains and resulting Kaiming stds per layer of a model."""

from __future__ import annotations

import argparse
import math

from torch import nn

import initwise as iw

EPILOG = """example:
  initwise fans            # the built-in example: an FSRCNN-like x2 super-resolution net
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
    p = sub.add_parser("fans", help="fans, gains and Kaiming stds of a built-in example model",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = [("layer", "type", "act", "fan_in", "fan_out", "torch in/out", "gain", "std in", "std out")]
    for name, layer, act in example_model():
        f = iw.fans(layer)
        g = iw.gain(act)
        rows.append((name, type(layer).__name__, act, f"{f.fan_in:g}", f"{f.fan_out:g}",
                     f"{f.torch_fan_in:g}/{f.torch_fan_out:g}", f"{g:.4f}",
                     f"{g / math.sqrt(f.fan_in):.4f}", f"{g / math.sqrt(f.fan_out):.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nfans are layer-aware (groups, transposition, stride); 'torch in/out' is what torch.nn.init reads from the shape.")
    return 0
