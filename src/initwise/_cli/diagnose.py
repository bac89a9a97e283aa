"""``initwise diagnose``: forward and backward signal per layer at initialization, measured beside the prediction."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ._target import (DEFAULT_SHAPE, check_rank, check_seed, check_single_input, load_target, make_input,
                      parse_shape)
from ._io import check_outputs, json_text, write_outputs
from .main import CLIError, describe, plain

EPILOG = """examples:
  initwise diagnose edsr --schemes default,kaiming_fan_in,kaiming_fan_out --plot spp.png
  initwise diagnose my_model.py:build --input 8x3x48x48 --json profile.json
  initwise diagnose mypkg.models:make_net --schemes orthogonal,kaiming_fan_in:residual_scale=0.1

TARGET: a built-in model (srcnn, fsrcnn, espcn, vdsr, edsr, rcan, dncnn, nafnet), path/to/file.py:factory or
package.module:factory; the factory takes no argument and returns an nn.Module or (nn.Module, example input).
The backward signal is a standard normal cotangent at the output. Without --schemes the model is profiled with
the weights its factory gave it.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diagnose", help="measure forward/backward variance per layer beside the analytic prediction",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", default="edsr", metavar="TARGET",
                   help="built-in model name, path/to/file.py:factory or package.module:factory (default: edsr)")
    p.add_argument("--input", metavar="SHAPE", help="input shape, e.g. 8x3x48x48 (default: the built-in model's "
                   f"example shape, the factory's example, or {'x'.join(map(str, DEFAULT_SHAPE))})")
    p.add_argument("--schemes", metavar="A,B,...", help="candidates to compare on copies, e.g. "
                   "default,kaiming_fan_in,kaiming_fan_out,kaiming_fan_avg,orthogonal")
    p.add_argument("--plot", metavar="FILE", help="write the signal-propagation plot (PNG/SVG/PDF; needs matplotlib)")
    p.add_argument("--json", metavar="FILE", help="write everything as JSON")
    p.add_argument("--seed", type=int, default=0, help="seed of the input, cotangent and schemes' weights")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import initwise as iw

    check_outputs([("--json", args.json, "file"), ("--plot", args.plot, "plot")])
    check_seed(args.seed)
    shape = parse_shape(args.input) if args.input is not None else None
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()] if args.schemes else None
    if args.schemes is not None and not schemes:
        raise CLIError("--schemes is empty")
    for s in schemes or ():
        try:
            iw.candidate(s)
        except (ValueError, TypeError) as e:
            raise CLIError(str(e)) from None
    target = load_target(args.target)
    if shape is not None or target.example is None:
        shape = shape or target.shape or DEFAULT_SHAPE
        check_single_input(target, f"--input {'x'.join(map(str, shape))}")
        check_rank(shape, target.model)
        example = make_input(shape, args.seed, like=target.model)
    else:
        example = target.example
    gen = torch.Generator().manual_seed(args.seed)
    try:
        profile = iw.diagnose(target.model, example, schemes=schemes, generator=gen)
    except Exception as e:  # the user's forward may raise anything (an assert, an IndexError)
        shapes = "x".join(map(str, example.shape)) if isinstance(example, torch.Tensor) else "the example"
        raise CLIError(f"diagnosing {args.target} on input {shapes} failed: {describe(e)}") from e
    print(f"{args.target}: input {'x'.join(map(str, profile.input_shapes[0])) if profile.input_shapes else '-'}")
    print(profile)
    outputs = []
    if args.json:
        text = json_text({"target": args.target, "seed": args.seed, **profile.to_dict()})
        outputs.append((args.json, lambda tmp: Path(tmp).write_text(text)))
    if args.plot:
        outputs.append((args.plot, profile.plot))
    write_outputs(outputs)
    return 0
