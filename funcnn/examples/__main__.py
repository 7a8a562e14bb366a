"""The command line:
``python -m funcnn.examples <xor|sine-mlp|sine-resnet|airfoil|digits> [options]``."""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from funcnn.errors import DatasetError
from funcnn.examples import NAMES, run
from funcnn.examples.airfoil import OLD_RECIPE_NAMES, RECIPES
from funcnn.progress import MODES

DESCRIPTIONS = {
    "xor": ("the tutorial's 2-2-1 sigmoid net on XOR, full-batch gradient descent lr 0.1", 10000),
    "sine-mlp": ("sin(x) with the tutorial's MLP 1-16-16-1 (ReLU), adam lr 0.01, batch 64", 1000),
    "sine-resnet": ("sin(x) with the tutorial's ResNet (3 blocks of 16), adam lr 0.01, batch 64",
                    1000),
    "airfoil": (
        ("UCI airfoil self-noise, test RMSE in dB; --recipe tutorial (the tutorial's settings) "
         "or better"),
        None,
    ),
    "digits": (
        ("UCI 8x8 handwritten digits (shipped with funcnn, offline) with a small CNN, test "
         "accuracy; adamw lr 0.03 warm-up + cosine, batch 32"),
        60,
    ),
}


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _seed(text: str) -> int:
    value = _int(text)
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**64), got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    """The argument parser (one sub-command per example)."""
    top = argparse.ArgumentParser(
        prog="python -m funcnn.examples",
        description="Train one of the tutorial's experiments, or the digits CNN, with funcnn: "
                    "shows progress, prints the final metrics, writes best.ckpt, metrics.json "
                    "and PNG plots.",
    )
    sub = top.add_subparsers(dest="example", metavar="EXAMPLE", required=True)
    for name in NAMES:
        text, epochs = DESCRIPTIONS[name]
        p = sub.add_parser(name, help=text, description=text)
        default = f"default {epochs}" if epochs else "default: tutorial 10000, better 600"
        p.add_argument("--epochs", type=_positive_int, default=None,
                       help=f"epochs to train ({default})")
        p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
        p.add_argument("--out", default=None, metavar="DIR",
                       help=f"output folder (default runs/{name})")
        p.add_argument("--progress", choices=MODES, default="auto",
                       help="auto: a live bar on a terminal, one line per epoch otherwise")
        p.add_argument("--no-plots", dest="plots", action="store_false",
                       help="do not draw the PNG plots")
        if name == "airfoil":
            p.add_argument("--data", default=None, metavar="PATH",
                           help="airfoil_self_noise.dat (default: the cache, downloaded once "
                                "into ~/.cache/funcnn or $FUNCNN_DATA_DIR)")
            p.add_argument("--recipe", choices=(*RECIPES, *OLD_RECIPE_NAMES), default="tutorial",
                           metavar="{" + ",".join(RECIPES) + "}",
                           help="tutorial: the tutorial's model and settings; better: "
                                "standardized data, wider ResNet, lr schedule (default "
                                "tutorial; seed, its old name, is deprecated)")
            p.add_argument("--dropout", type=float, default=0.0, metavar="RATE",
                           help="better recipe: a Dropout(RATE) after each ResNet block (default 0)")
            p.add_argument("--batchnorm", action="store_true",
                           help="better recipe: a BatchNorm after the first Linear")
    return top


def main(argv: list[str] | None = None, stream: TextIO | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    cli = parser()
    args = vars(cli.parse_args(argv))
    name = args.pop("example")
    if name == "airfoil" and args["recipe"] != "better" and (args["dropout"] or args["batchnorm"]):
        cli.error("--dropout and --batchnorm change the better recipe's model; add --recipe better")
    if args["epochs"] is None:
        del args["epochs"]
    if args.get("recipe") in OLD_RECIPE_NAMES:
        new = OLD_RECIPE_NAMES[args["recipe"]]
        print(f"python -m funcnn.examples {name}: --recipe {args['recipe']} is deprecated; it is "
              f"now --recipe {new} (the same recipe)", file=sys.stderr)
        args["recipe"] = new
    try:
        outcome = run(name, stream=stream, **args)
    except DatasetError as error:
        print(f"python -m funcnn.examples {name}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # exit 130, as a shell reports a SIGINT
        why = str(error) or "before the run finished; its output folder may be incomplete"
        print(f"interrupted {why}", file=sys.stderr)
        return 130
    return 130 if outcome.metrics["stop_reason"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
