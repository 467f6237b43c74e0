"""Pieces the subcommands share: the one-line-error parser, exit codes, argument types."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from flowforge.eval.clip import MelSettings
    from flowforge.runs import Run

EXIT_BAD_INPUT = 2
EXIT_TRAINING_FAILED = 1


def quiet_rank() -> bool:
    """Whether this process is a rank other than 0 of a ``torchrun`` launch: bad input is the
    same on every rank, so only rank 0 prints it (every rank still exits with status 2)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and int(os.environ["RANK"]) != 0
    except (KeyError, ValueError):
        return False


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``flowforge train: error: ...`` (under
    ``torchrun``, printed by rank 0 only)."""

    def error(self, message: str) -> NoReturn:
        if quiet_rank():
            self.exit(EXIT_BAD_INPUT)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def float_list(text: str) -> list[float]:
    try:
        return [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, e.g. 1.2,3.4; got {text!r}"
        ) from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    """A random seed: an integer that torch and numpy take (64 bits)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not -(2**63) <= value < 2**63:  # torch: "Overflow when unpacking long long"
        raise argparse.ArgumentTypeError(f"expected a 64-bit integer seed, got {value}")
    return value


def version() -> str:
    from flowforge._version import __version__

    return f"flowforge {__version__}"


def warn_worse_than_gaussian(prog: str, split: str, nll: float, base: object) -> None:
    """Warn on stderr when a flow's NLL is above the Gaussian baseline (an ``NLLSummary``) by
    more than 0.001 nats: a table's model that fell back to its Gaussian start (the baseline)
    differs from it only by float32 rounding."""
    base_nll = getattr(base, "nll", None)
    if base_nll is not None and nll > base_nll + 1e-3:
        print(
            f"{prog}: warning: the flow's {split} NLL {nll:.4f} is worse than a "
            f"full-covariance Gaussian fitted to the training rows ({base_nll:.4f}): it has "
            f"likely overfitted (fewer steps, --patience, a smaller --hidden or --weight-decay "
            f"help on small tables)",
            file=sys.stderr,
        )


def refuse_context(run: Run, name: str, command: str, flag: str) -> None:
    """Refuse, in one line, a conditional run that ``flowforge COMMAND`` was given without the
    conditioning it needs: a vocoder (conditioned on mel frames) is pointed to ``flag``; any
    other context (classes, say) is refused generically.

    Args:
        run: the opened :class:`~flowforge.runs.run.Run`.
        name: the run as the user named it.
        command: ``sample`` or ``score``.
        flag: the option that gives a vocoder its clip (``--mel-from``, ``--input``).

    Raises:
        RunError: the run's flow takes a context.
    """
    from flowforge.runs import RunError

    spec = run.spec
    if not spec.kwargs.get("context"):
        return
    if spec.kind == "audio" and spec.kwargs.get("frame_features"):
        raise RunError(
            f"{name} is a vocoder (a flow conditioned on each segment's mel frames): give "
            f"flowforge {command} a clip with {flag} CLIP.wav, whose mel it conditions on"
        )
    raise RunError(
        f"{name} holds a flow conditioned on a per-example context; flowforge {command} "
        f"cannot supply that context for it"
    )


def vocoder_settings(run: Run, name: str, flag: str) -> tuple[MelSettings, dict[str, Any]]:
    """A vocoder run's mel settings and its recorded audio figures; a run that is not one is
    refused in one line."""
    from flowforge.eval.clip import mel_settings
    from flowforge.runs import RunError

    try:
        audio = json.loads(run.files.results.read_text()).get("audio") or {}
    except (OSError, ValueError, AttributeError):
        audio = {}
    settings = mel_settings(run.spec, audio.get("sample_rate"))
    if settings is None:
        what = (
            "an unconditional flow"
            if not run.spec.kwargs.get("context")
            else "a flow conditioned on something other than mel frames"
        )
        raise RunError(
            f"{flag} CLIP.wav gives a vocoder (an audio run trained with --condition mel) its "
            f"clip; {name} holds {what} of {run.spec.kind} data"
        )
    return settings, audio
