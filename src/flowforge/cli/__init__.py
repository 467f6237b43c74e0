"""The ``flowforge`` command line: ``train``, ``eval``, ``sample``, ``score``, ``datasets``, ``vi``,
``sbi``.

A thin layer over :mod:`flowforge.train`, :mod:`flowforge.eval`, :mod:`flowforge.runs` and
:mod:`flowforge.data`. Bad input (missing file, unknown dataset or flow, bad values, wrong
dimension, bad option) is reported as one line on stderr with exit status 2 and no traceback;
a training run stopped by a non-finite loss, an evaluation that meets a non-finite
log-likelihood (the rows are named, never skipped), and a ``score`` whose output holds a
non-finite row (written as ``nan`` / ``-inf``, named in a warning on stderr) exit with status 1.

One module per subcommand (:mod:`flowforge.cli.train`, ``eval``, ``sample``, ``score``,
``datasets``, ``vi``, ``sbi``), each with ``add_parser(sub)`` and ``run(args)``; shared argument types and
exit codes live in :mod:`flowforge.cli._common`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from flowforge.cli import datasets, eval, sample, sbi, score, train, vi
from flowforge.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_TRAINING_FAILED,
    Parser,
    quiet_rank,
    version,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_TRAINING_FAILED", "build_parser", "main"]

_COMMANDS = {
    m.__name__.rsplit(".", 1)[1]: m for m in (train, eval, sample, score, datasets, vi, sbi)
}


def build_parser() -> argparse.ArgumentParser:
    """The ``flowforge`` argument parser, with every subcommand."""
    parser = Parser(prog="flowforge", description="Normalizing flows: train, evaluate, sample.")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in _COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "train":  # as given: its launcher (--nproc-per-node) passes it on
        args.argv = list(sys.argv[1:] if argv is None else argv)
    from flowforge.core.extras import MissingExtra
    from flowforge.data import DataError
    from flowforge.eval.likelihood import NonFiniteLikelihood
    from flowforge.runs import ConfigError, RunError
    from flowforge.train.loop import NonFiniteLoss
    from flowforge.transforms.continuous import SolverError

    prog = f"flowforge {args.command}"
    try:
        return int(_COMMANDS[args.command].run(args))
    except (DataError, ConfigError, RunError, MissingExtra) as e:
        if not quiet_rank():  # under torchrun every rank meets the same bad input: print once
            print(f"{prog}: error: {e}", file=sys.stderr)
        elif "TORCHELASTIC_RUN_ID" in os.environ:  # rank 0 first: torchrun then stops this one
            time.sleep(2.0)
        return EXIT_BAD_INPUT
    except (NonFiniteLoss, NonFiniteLikelihood, SolverError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt as e:
        print(f"{prog}: interrupted{'; ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
