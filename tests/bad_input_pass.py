"""A bad-input pass as a new user: every subcommand, the scikit-learn estimators and ``ff.sbi``.

Not a test module (pytest does not collect it): run it by hand, it takes a few minutes::

    PYTHONPATH=src python tests/bad_input_pass.py OUT.md [train,eval,sample,score,datasets,vi,sbi,lib]

Each CLI case runs ``flowforge ARGS`` in this process (:func:`cli_util.run_cli`) in a folder
with a few small runs; a case is *clean* when it does what its expectation says: ``refuse``
(exit 2, one line on stderr, no traceback, no file written or changed) or ``ok`` (exit 0,
finite numbers). Library cases call the API: ``refuse`` means one ``ValueError`` /
``TypeError`` (or scikit-learn's ``InvalidParameterError``) with a one-line message. Anything
else is listed as not clean with what happened. The table goes to OUT.md.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cli_util import TINY, TINY_TABLE, run_cli

VI = ["--steps", "2", "--samples", "8", "--eval-samples", "50", "--transforms", "2"]
VI += ["--no-plots", "--quiet"]
SBI = ["--simulator", "two_moons", "--simulations", "300", "--steps", "5", "--samples", "200"]
SBI += ["--no-plots", "--flow-options", '{"transforms": 2, "hidden": [8]}']
T2 = [*TINY, "--steps", "2"]
TT = [*TINY_TABLE, "--steps", "2"]
IMG = ["--data", "digits", "--quiet", "--no-plots", "--steps", "2", "--batch-size", "16"]
GLOW = [*IMG, "--flow", "glow", "--flow-options", '{"levels": 1, "depth": 1}', "--hidden", "8"]
TAR = [*IMG, "--flow", "tarflow", "--flow-options", '{"blocks": 1, "layers": 1, "width": 16}']


@dataclass
class Outcome:
    clean: bool
    what: str


def _tree(root: Path) -> dict[str, float]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


def cli(args: list[str], expect: str, cwd: Path) -> Outcome:
    before = _tree(cwd)
    proc = run_cli(*args, cwd=cwd)
    after = _tree(cwd)
    err = proc.stderr.strip()
    lines = err.splitlines()
    changed = sorted(k for k in after if before.get(k) != after[k])
    first = lines[0][:150] if lines else ""
    if "Traceback" in err:
        last = [ln for ln in lines if ln and not ln.startswith(" ")][-1][:150]
        return Outcome(False, f"traceback: {last}")
    if expect == "refuse":
        if proc.returncode != 2:
            out = (proc.stdout.strip().splitlines() or [""])[-1][:100]
            return Outcome(False, f"accepted (rc {proc.returncode}): {first or out}")
        if len(lines) != 1:
            return Outcome(False, f"{len(lines)} lines: {' / '.join(lines)[:150]}")
        if changed:
            return Outcome(False, f"wrote {changed[:3]}: {first}")
        return Outcome(True, first)
    if proc.returncode != 0:
        return Outcome(False, f"rc {proc.returncode}: {first}")
    text = proc.stdout + proc.stderr
    if "nan" in text.lower().split() or " inf" in text:
        return Outcome(False, f"non-finite number printed: {text[:150]}")
    return Outcome(True, "ok" + (f" ({first})" if first else ""))


def lib(fn: Callable[[], object], expect: str) -> Outcome:
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        value = fn()
    except (ValueError, TypeError, InvalidParameterError) as e:
        msg = str(e)
        if expect != "refuse":
            return Outcome(False, f"raised {type(e).__name__}: {msg[:150]}")
        if "\n" in msg.strip() or not msg:
            return Outcome(False, f"{type(e).__name__} of {len(msg.splitlines())} lines")
        return Outcome(True, f"{type(e).__name__}: {msg[:150]}")
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{Path(tb.filename).name}:{tb.lineno}"
        return Outcome(False, f"{type(e).__name__} at {where}: {str(e)[:120]}")
    if expect == "refuse":
        return Outcome(False, f"accepted, returned {type(value).__name__}")
    if isinstance(value, torch.Tensor | np.ndarray):
        arr = np.asarray(value.detach() if isinstance(value, torch.Tensor) else value, float)
        if not np.isfinite(arr).all():
            return Outcome(False, "returned non-finite values")
    return Outcome(True, "ok")


def setup(root: Path) -> None:
    """The runs the cases read, and some input files."""
    steps = [
        ("train", *T2, "--out", "toy"),
        ("train", "--data", "wine", *TT, "--out", "tab"),
        ("train", *GLOW, "--out", "img"),
        ("train", *TAR, "--out", "tar"),
        ("vi", *VI, "--out", "vi"),
        ("sbi", *SBI, "--out", "sbi"),
    ]
    for args in steps:
        proc = run_cli(*args, cwd=root)
        if proc.returncode != 0:
            raise SystemExit(f"setup {args}: {proc.stderr}")
    rng = np.random.default_rng(0)
    np.save(root / "rows2.npy", rng.normal(size=(5, 2)))
    np.save(root / "rows13.npy", rng.normal(size=(5, 13)))
    np.save(root / "empty.npy", np.zeros((0, 2)))
    np.save(root / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "img.npy", rng.integers(0, 17, size=(3, 1, 8, 8)))
    np.save(root / "imgf.npy", rng.random(size=(3, 64)))
    np.save(root / "nan2.npy", np.array([[np.nan, 1.0], [0.0, 0.0]]))
    np.save(root / "str.npy", np.array([["a", "b"]]))
    np.save(root / "bool2.npy", np.array([[True, False]]))
    np.save(root / "cplx.npy", np.array([[1 + 1j, 0]]))
    np.save(root / "3d.npy", np.zeros((2, 2, 2)))
    (root / "hdr.csv").write_text("a,b\n")
    (root / "blank.csv").write_text("")
    (root / "ragged.csv").write_text("1,2\n3\n")
    (root / "inf.csv").write_text("1,inf\n0,0\n")
    (root / "text.csv").write_text("x,y\n1,cat\n")
    (root / "semi.csv").write_text("1;2\n3;4\n")
    (root / "bin.csv").write_bytes(b"\x00\xff\xfe\x00" * 30)
    (root / "dup.csv").write_text("a,a\n1,2\n")
    (root / "big.csv").write_text("1e30,1e30\n")
    (root / "hex.csv").write_text("0x10,1\n")
    (root / "neg.csv").write_text(",".join(["-1"] * 64) + "\n")
    (root / "frac.csv").write_text(",".join(["0.5"] * 64) + "\n")
    (root / "a.txt").write_text("1,2\n")
    (root / "bad.toml").write_text("steps = [\n")
    (root / "unk.toml").write_text("stepz = 3\n")
    (root / "typ.toml").write_text('steps = "many"\n')
    (root / "nested.toml").write_text("[train]\nsteps = 3\n")
    (root / "float.toml").write_text("steps = 2.5\n")
    (root / "vi.toml").write_text("steps = -1\n")
    (root / "flow.toml").write_text("flow = \"__import__('os')\"\n")
    np.savez(root / "sims.npz", theta=rng.normal(size=(300, 2)), x=rng.normal(size=(300, 3)))
    np.savez(root / "sims_bad.npz", theta=rng.normal(size=(300, 2)), x=rng.normal(size=(299, 3)))
    np.savez(root / "sims_nan.npz", theta=np.full((300, 2), np.nan), x=rng.normal(size=(300, 3)))
    np.savez(root / "sims_1d.npz", theta=rng.normal(size=300), x=rng.normal(size=(300, 3)))
    np.savez(root / "sims_noth.npz", x=rng.normal(size=(300, 3)))
    (root / "sims.csv").write_text(
        "a,b,x1\n" + "".join(f"{r[0]},{r[1]},{r[2]}\n" for r in rng.normal(size=(300, 3)))
    )
    (root / "afile").write_text("x")


def _out(args: list[str]) -> list[str]:
    """``--out new`` unless the case names its own output or resumes."""
    return [] if "--out" in args or "--resume" in args else ["--out", "new"]


def cli_cases() -> list[tuple[list[str], str]]:
    R, OK = "refuse", "ok"
    tr = [
        # numbers out of range, huge, non-numbers
        (["--steps", "0"], R), (["--steps", "-1"], R), (["--steps", "1.5"], R),
        (["--steps", str(10**30)], R), (["--steps", "1e3"], R), (["--steps", ""], R),
        (["--epochs", "0"], R), (["--epochs", "nan"], R), (["--epochs", "1e308"], R),
        (["--epochs", "2", "--steps", "3"], R), (["--lr", "0"], R), (["--lr", "-1"], R),
        (["--lr", "inf"], R), (["--lr", "abc"], R), (["--batch-size", "0"], R),
        (["--batch-size", str(2**63)], R), (["--batch-size", "100000000000"], R),
        (["--hidden", "0"], R), (["--hidden", "16,,16"], R), (["--hidden", "-4"], R),
        (["--hidden", "a"], R), (["--hidden", "100000000"], R), (["--hidden", ""], R),
        (["--transforms", "0"], R), (["--transforms", "100000000"], R),
        (["--bins", "0"], R), (["--bins", "100000000"], R), (["--seed", "-1"], OK),
        (["--seed", str(2**64)], R), (["--n-val", "0"], R), (["--n-val", "-5"], R),
        (["--n-test", "1e30"], R), (["--eval-every", "0"], R), (["--clip-grad", "-1"], R),
        (["--ema-decay", "1"], R), (["--ema-decay", "-0.1"], R), (["--weight-decay", "-1"], R),
        (["--warmup-steps", "-1"], R), (["--patience", "-1"], R), (["--threads", "-1"], R),
        (["--threads", "0"], OK), (["--min-lr", "1"], R), (["--lr-factor", "1"], R),
        (["--logit-alpha", "0.1"], R), (["--noise", "-1"], R), (["--noise", "0.1"], R),
        (["--eval-batch-size", "0"], R), (["--max-nan-recoveries", "-1"], R),
        # names and choices
        (["--flow", "nosuch"], R), (["--flow", "NSF"], R), (["--data", "nosuch"], R),
        (["--data", "afile"], R), (["--data", "a.txt"], R), (["--data", "blank.csv"], R),
        (["--data", "hdr.csv"], R), (["--data", "ragged.csv"], R), (["--data", "inf.csv"], R),
        (["--data", "text.csv"], R), (["--data", "bin.csv"], R), (["--data", "dup.csv"], R),
        (["--data", "obj.npy"], R), (["--data", "str.npy"], R), (["--data", "cplx.npy"], R),
        (["--data", "3d.npy"], R), (["--data", "empty.npy"], R), (["--data", "nan2.npy"], R),
        (["--data", "rows2.npy"], R), (["--objective", "nosuch"], R),
        (["--objective", "flow-matching"], R), (["--optimizer", "sgdx"], R),
        (["--schedule", "nosuch"], R), (["--device", "tpu"], R), (["--device", "cuda"], R),
        (["--precision", "fp8"], R), (["--on-nan", "explode"], R),
        (["--dequantization", "variational"], R), (["--columns", "0"], R),
        # options and files
        (["--flow-options", "{"], R), (["--flow-options", "[]"], R),
        (["--flow-options", '{"nosuch": 1}'], R), (["--flow-options", '{"bins": "8"}'], R),
        (["--flow-options", '{"residual_blocks": 1000000000}'], R),
        (["--dequantizer-options", '{"a": 1}'], R), (["--config", "missing.toml"], R),
        (["--config", "bad.toml"], R), (["--config", "unk.toml"], R),
        (["--config", "typ.toml"], R), (["--config", "nested.toml"], R),
        (["--config", "float.toml"], R), (["--config", "flow.toml"], R),
        (["--config", "rows2.npy"], R), (["--out", "afile"], R), (["--out", "toy"], R),
        (["--resume", "nosuch"], R), (["--resume", "vi"], R), (["--resume", "sbi"], R),
        (["--resume", "afile"], R), (["--resume", "toy", "--lr", "0.1"], R),
        (["--resume", "toy", "--config", "unk.toml"], R), (["--nproc-per-node", "0"], R),
        (["--nproc-per-node", "x"], R), (["--time-budget", "5"], R),
        (["--flow", "auto", "--time-budget", "0"], R), (["--kinetic", "1"], R),
        (["--flow", "planar"], R), (["--flow", "glow"], R), (["--flow", "tarflow"], R),
        (["--flow", "waveglow"], R), (["--flow", "ffjord", "--kinetic", "-1"], R),
        (["--flow", "ffjord", "--flow-options", '{"rtol": 1e-30}'], R),
        (["--flow", "ffjord", "--flow-options", '{"adjoint": "no"}'], R),
        (["--flow", "ffjord", "--flow-options", '{"method": "nosuch"}'], R),
        (["--flow", "ffjord", "--objective", "flow-matching", "--fm-sigma", "-1"], R),
    ]  # fmt: skip
    cases = [(["train", *T2, *a, *_out(a)], e) for a, e in tr]
    img = [
        ([*GLOW, "--flow-options", '{"levels": 9}'], R),
        ([*GLOW, "--flow-options", '{"levels": 0}'], R),
        ([*GLOW, "--flow-options", '{"depth": -1}'], R),
        ([*GLOW, "--dequantization", "nosuch"], R),
        ([*GLOW, "--logit-alpha", "0.6"], R),
        ([*GLOW, "--n-val", "100"], OK),  # the README: digits takes --n-val
        ([*GLOW, "--batch-size", "100000"], OK),  # full-batch: every step one epoch
        ([*GLOW, "--hidden", "8,8,8,8,8,8,8,8,8,8,0"], R),
        ([*TAR, "--flow-options", '{"patch": 3}'], R),
        ([*TAR, "--flow-options", '{"width": 15, "heads": 4}'], R),
        ([*TAR, "--flow-options", '{"blocks": 0}'], R),
        ([*TAR, "--flow-options", '{"nosuch": 0}'], R),
        ([*TAR, "--noise", "-0.1"], R),
        ([*TAR, "--data", "wine"], R),
        (["--data", "speech", "--flow", "waveglow", "--steps", "2", "--flow-options",
          '{"flows": 0}'], R),
        (["--data", "speech", "--flow", "waveglow", "--steps", "2", "--flow-options",
          '{"group": 7}'], R),
        (["--data", "speech", "--flow", "waveglow", "--steps", "2", "--flow-options",
          '{"nosuch": 1}'], R),
        (["--data", "speech", "--flow", "nsf", "--steps", "2"], R),
        (["--data", "speech", "--flow", "glow", "--steps", "2"], R),
        (["--data", "speech", "--flow", "waveglow", "--steps", "2", "--noise", "0.1"], R),
        (["--data", "speech", "--flow", "waveglow", "--steps", "2", "--dequantization",
          "variational"], R),
        (["--data", "speech", "--flow", "waveglow", "--steps", "2", "--hidden", "0"], R),
    ]  # fmt: skip
    cases += [(["train", *a, *_out(a)], e) for a, e in img]
    ev = [
        (["eval"], R), (["eval", "nosuch"], R), (["eval", "afile"], R), (["eval", "sbi"], R),
        (["eval", "toy", "--split", "nosuch"], R), (["eval", "toy", "--device", "cuda"], R),
        (["eval", "img", "--samples", "0"], R), (["eval", "img", "--samples", "-3"], R),
        (["eval", "img", "--samples", str(10**30)], R), (["eval", "toy", "--json"], OK),
        (["eval", "tab", "--data-dir", "nosuch"], R), (["eval", "vi", "--split", "val"], R),
        (["eval", "tar", "--split", "train"], OK), (["eval", "img", "--samples", "100000000"], R),
    ]  # fmt: skip
    sa = [
        (["sample", "toy", "-n", "0", "-o", "s.npy"], R),
        (["sample", "toy", "-n", "-5", "-o", "s.npy"], R),
        (["sample", "toy", "-n", str(10**30), "-o", "s.npy"], R),
        (["sample", "toy", "-n", "1000000000000", "-o", "s.npy"], R),
        (["sample", "toy", "-n", "5", "-o", "s.txt"], R),
        (["sample", "toy", "-n", "5", "-o", "nosuchdir/s.npy"], R),
        (["sample", "toy", "-n", "5", "-o", "toy"], R),
        (["sample", "toy", "--temperature", "0", "-o", "s.npy"], R),
        (["sample", "toy", "--temperature", "nan", "-o", "s.npy"], R),
        (["sample", "toy", "--temperature", "-1", "-o", "s.npy"], R),
        (["sample", "toy", "--temperature", "1e300", "-o", "s.npy"], R),
        (["sample", "toy", "--denoise", "-o", "s.npy"], R),
        (["sample", "toy", "--guidance", "2", "-o", "s.npy"], R),
        (["sample", "tar", "--guidance", "nan", "-o", "s.npy"], R),
        (["sample", "tar", "--guidance", "1", "--attention-temperature", "0", "-o", "s.npy"], R),
        (["sample", "tar", "--guidance", "1", "--attention-temperature", "-1", "-o", "s.npy"], R),
        (["sample", "toy", "--seed", str(2**70), "-o", "s.npy"], R),
        (["sample", "toy", "--seed", "-1", "-o", "s.npy"], OK),
        (["sample", "sbi", "-o", "s.npy"], R), (["sample", "nosuch", "-o", "s.npy"], R),
        (["sample", "img", "-n", "2", "-o", "s.csv"], OK),
    ]  # fmt: skip
    sc = [
        (["score", "toy"], R), (["score", "toy", "-i", "nosuch.csv"], R),
        (["score", "toy", "-i", "rows13.npy"], R), (["score", "toy", "-i", "empty.npy"], R),
        (["score", "toy", "-i", "hdr.csv"], R), (["score", "toy", "-i", "blank.csv"], R),
        (["score", "toy", "-i", "ragged.csv"], R), (["score", "toy", "-i", "text.csv"], R),
        (["score", "toy", "-i", "semi.csv"], OK), (["score", "toy", "-i", "bin.csv"], R),
        (["score", "toy", "-i", "obj.npy"], R), (["score", "toy", "-i", "str.npy"], R),
        (["score", "toy", "-i", "cplx.npy"], R), (["score", "toy", "-i", "3d.npy"], R),
        (["score", "toy", "-i", "nan2.npy"], R), (["score", "toy", "-i", "inf.csv"], R),
        (["score", "toy", "-i", "big.csv"], OK), (["score", "toy", "-i", "hex.csv"], R),
        (["score", "toy", "-i", "bool2.npy"], OK), (["score", "toy", "-i", "a.txt"], R),
        (["score", "toy", "-i", "rows2.npy", "-o", "x.txt"], R),
        (["score", "toy", "-i", "rows2.npy", "-o", "toy"], R),
        (["score", "toy", "-i", "rows2.npy", "--contamination", "1"], R),
        (["score", "toy", "-i", "rows2.npy", "--contamination", "0"], R),
        (["score", "toy", "-i", "rows2.npy", "--threshold", "inf"], R),
        (["score", "toy", "-i", "rows2.npy", "--labels", "5"], R),
        (["score", "toy", "-i", "rows2.npy", "--labels", "0"], R),
        (["score", "toy", "-i", "rows2.npy", "--plot", "p.txt"], R),
        (["score", "img", "-i", "imgf.npy"], R), (["score", "img", "-i", "neg.csv"], R),
        (["score", "img", "-i", "frac.csv"], R), (["score", "img", "-i", "img.npy"], OK),
        (["score", "img", "-i", "img.npy", "--seed", str(2**70)], R),
        (["score", "tar", "-i", "rows2.npy"], R), (["score", "vi", "-i", "rows2.npy"], R),
        (["score", "sbi", "-i", "rows2.npy"], R), (["score", "tab", "-i", "rows2.npy"], R),
        (["score", "tab", "-i", "rows13.npy", "--labels", "x"], R),
    ]  # fmt: skip
    vi = [
        (["--steps", "0"], R), (["--steps", str(10**30)], R), (["--samples", "0"], R),
        (["--samples", str(10**12)], R), (["--lr", "-1"], R), (["--lr", "nan"], R),
        (["--target", "nosuch"], R), (["--target-options", "{"], R),
        (["--target-options", '{"nosuch": 1}'], R), (["--target", "funnel", "--target-options",
          '{"dim": 0}'], R), (["--flow", "glow"], R), (["--flow", "tarflow"], R),
        (["--flow", "waveglow"], R), (["--flow", "nsf", "--flow-options", '{"bins": 0}'], R),
        (["--hidden", "0"], R), (["--transforms", "0"], R), (["--transforms", str(10**9)], R),
        (["--iwae-k", "0", "--objective", "iwae"], R), (["--objective", "iwae", "--iwae-k",
          str(10**12)], R), (["--anneal", "-1"], R), (["--eval-samples", "0"], R),
        (["--eval-samples", str(10**12)], R), (["--checkpoint-every", "0"], R),
        (["--config", "vi.toml"], R), (["--config", "unk.toml"], R), (["--resume", "toy"], R),
        (["--resume", "nosuch"], R), (["--out", "afile"], R), (["--out", "toy"], R),
        (["--device", "cuda"], R), (["--seed", "-1"], OK),
    ]  # fmt: skip
    sb = [
        ([], R), (["--simulator", "nosuch"], R), (["--data", "nosuch.npz"], R),
        (["--data", "sims_bad.npz", "--low", "-3,-3", "--high", "3,3"], R),
        (["--data", "sims_nan.npz", "--low", "-3,-3", "--high", "3,3"], R),
        (["--data", "sims_1d.npz", "--low", "-3", "--high", "3"], R),
        (["--data", "sims_noth.npz"], R), (["--data", "sims.npz"], R),
        (["--data", "sims.npz", "--low", "-3,-3", "--high", "3"], R),
        (["--data", "sims.npz", "--low", "3,3", "--high", "-3,-3"], R),
        (["--data", "sims.npz", "--low", "nan,0", "--high", "3,3"], R),
        (["--data", "sims.npz", "--low", "-1,-1", "--high", "1,1"], R),
        (["--data", "sims.npz", "--low", "-9,-9", "--high", "9,9", "--observation", "1"], R),
        (["--data", "sims.npz", "--low", "-9,-9", "--high", "9,9", "--prior", "gauss"], R),
        (["--data", "sims.csv", "--low", "-9,-9", "--high", "9,9"], R),
        (["--data", "sims.csv", "--theta-cols", "a,zz", "--x-cols", "x1", "--low", "-9,-9",
          "--high", "9,9"], R),
        (["--data", "sims.csv", "--theta-cols", "a,b", "--x-cols", "a", "--low", "-9,-9",
          "--high", "9,9"], R),
        ([*SBI, "--simulations", "0"], R), ([*SBI, "--simulations", str(10**30)], R),
        ([*SBI, "--steps", "0"], R), ([*SBI, "--batch-size", "0"], R), ([*SBI, "--lr", "-1"], R),
        ([*SBI, "--lr", "nan"], R), ([*SBI, "--samples", "0"], R),
        ([*SBI, "--seed", str(2**70)], R), ([*SBI, "--observation", "1,2,3"], R),
        ([*SBI, "--observation", "nan,0"], R), ([*SBI, "--true-theta", "1"], R),
        ([*SBI, "--flow-options", '{"nosuch": 1}'], R), ([*SBI, "--flow", "glow"], R),
        ([*SBI, "--method", "fmpe", "--flow", "nsf"], R), ([*SBI, "--low", "-1,-1"], R),
        ([*SBI, "--out", "afile"], R), ([*SBI, "--out", "toy"], R),
    ]  # fmt: skip
    ds = [
        (["datasets", "--data-dir", "afile"], R),
        (["datasets", "--data-dir", "nosuch"], OK),
        (["datasets", "--json"], OK),
        (["datasets", "--bogus"], R),
    ]
    cases += ev + sa + sc + ds
    cases += [(["vi", *VI, *a, *_out(a)], e) for a, e in vi]
    cases += [(["sbi", *a, *_out(a)], e) for a, e in sb]
    return cases


def lib_cases() -> list[tuple[str, Callable[[], object], str]]:
    import flowforge as ff

    R, OK = "refuse", "ok"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    kw = {"max_epochs": 2, "hidden": (8,), "transforms": 2}

    def fd(**p: object) -> ff.FlowDensity:
        return ff.FlowDensity(**{**kw, **p})  # type: ignore[arg-type]

    def ad(**p: object) -> ff.FlowAnomalyDetector:
        return ff.FlowAnomalyDetector(**{**kw, **p})  # type: ignore[arg-type]

    fitted = fd().fit(X)
    det = ad().fit(X)
    nan = X.copy()
    nan[0, 0] = np.nan
    far = np.full((2, 3), 1e30)
    cases: list[tuple[str, Callable[[], object], str]] = [
        ("FlowDensity().fit(X with NaN)", lambda: fd().fit(nan), R),
        ("FlowDensity().fit(X with inf)", lambda: fd().fit(np.where(nan != nan, np.inf, X)), R),
        ("FlowDensity().fit(1-D X)", lambda: fd().fit(X[:, 0]), R),
        ("FlowDensity().fit(3-D X)", lambda: fd().fit(X[None]), R),
        ("FlowDensity().fit((0, 3))", lambda: fd().fit(X[:0]), R),
        ("FlowDensity().fit(one row)", lambda: fd().fit(X[:1]), R),
        ("FlowDensity().fit(strings)", lambda: fd().fit(np.array([["a", "b"]] * 20)), R),
        ("FlowDensity().fit(complex)", lambda: fd().fit(X + 1j), R),
        ("FlowDensity().fit(1e300 column)", lambda: fd().fit(X * 1e300), R),
        ("FlowDensity().fit(constant column)", lambda: fd().fit(np.c_[X, np.ones(120)]), OK),
        ("FlowDensity(flow='nosuch')", lambda: fd(flow="nosuch").fit(X), R),
        ("FlowDensity(flow='glow')", lambda: fd(flow="glow").fit(X), R),
        ("FlowDensity(flow='tarflow')", lambda: fd(flow="tarflow").fit(X), R),
        ("FlowDensity(flow='waveglow')", lambda: fd(flow="waveglow").fit(X), R),
        ("FlowDensity(transforms=0)", lambda: fd(transforms=0).fit(X), R),
        ("FlowDensity(hidden=(0,))", lambda: fd(hidden=(0,)).fit(X), R),
        ("FlowDensity(hidden=(10**12,))", lambda: fd(hidden=(10**12,)).fit(X), R),
        ("FlowDensity(lr=-1)", lambda: fd(lr=-1.0).fit(X), R),
        ("FlowDensity(lr=nan)", lambda: fd(lr=float("nan")).fit(X), R),
        ("FlowDensity(batch_size=0)", lambda: fd(batch_size=0).fit(X), R),
        ("FlowDensity(max_epochs=10**30)", lambda: fd(max_epochs=10**30).fit(X), R),
        ("FlowDensity(validation_fraction=1)", lambda: fd(validation_fraction=1.0).fit(X), R),
        ("FlowDensity(noise='loud')", lambda: fd(noise="loud").fit(X), R),
        ("FlowDensity(noise=-1)", lambda: fd(noise=-1.0).fit(X), R),
        ("FlowDensity(trim=1)", lambda: fd(trim=1.0).fit(X), R),
        ("FlowDensity(min_scale=0)", lambda: fd(min_scale=0.0).fit(X), R),
        ("FlowDensity(random_state=2**70)", lambda: fd(random_state=2**70).fit(X), R),
        ("FlowDensity(flow_options={'x': 1})", lambda: fd(flow_options={"x": 1}).fit(X), R),
        ("fitted.score_samples(wrong width)", lambda: fitted.score_samples(X[:, :2]), R),
        ("fitted.score_samples(NaN row)", lambda: fitted.score_samples(nan[:2]), R),
        ("fitted.score_samples(1e30 rows)", lambda: fitted.score_samples(far), OK),
        ("fitted.score_samples((0, 3))", lambda: fitted.score_samples(X[:0]), R),
        ("fitted.sample(0)", lambda: fitted.sample(0), R),
        ("fitted.sample(-1)", lambda: fitted.sample(-1), R),
        ("fitted.sample(10**30)", lambda: fitted.sample(10**30), R),
        ("fitted.sample(1.5)", lambda: fitted.sample(1.5), R),  # type: ignore[arg-type]
        ("unfitted.score_samples", lambda: fd().score_samples(X), R),
        ("FlowAnomalyDetector(contamination=0.7)", lambda: ad(contamination=0.7).fit(X), R),
        ("FlowAnomalyDetector(contamination=-0.1)", lambda: ad(contamination=-0.1).fit(X), R),
        ("FlowAnomalyDetector(target_fpr=0)", lambda: ad(target_fpr=0.0).fit(X), R),
        ("FlowAnomalyDetector(target_fpr=nan)", lambda: ad(target_fpr=float("nan")).fit(X), R),
        ("FlowAnomalyDetector(criterion='x')", lambda: ad(criterion="x").fit(X), R),
        ("detector.predict(wrong width)", lambda: det.predict(X[:, :2]), R),
        ("detector.predict(NaN)", lambda: det.predict(nan[:3]), R),
        ("detector.decision_function(1e30)", lambda: det.decision_function(far), OK),
        ("detector.predict(1e30 rows)", lambda: det.predict(far), OK),
        ("detector.fit(y with wrong length)", lambda: ad().fit(X, np.ones(3)), R),
    ]
    prior = ff.sbi.BoxUniform([-2.0, -2.0], [2.0, 2.0])
    theta, x = ff.sbi.simulate(lambda t: t + 0.3 * torch.randn_like(t), prior, 300)
    opts = {"transforms": 2, "hidden": (8,)}
    post = ff.sbi.NPE(prior, flow_options=opts).fit(theta, x, max_steps=5)
    xo = torch.tensor([0.5, -0.5])
    t_nan = theta.clone()
    t_nan[:, 0] = float("nan")
    cases += [
        ("BoxUniform(low > high)", lambda: ff.sbi.BoxUniform([1.0], [0.0]), R),
        ("BoxUniform(nan)", lambda: ff.sbi.BoxUniform([float("nan")], [1.0]), R),
        ("BoxUniform(inf)", lambda: ff.sbi.BoxUniform([0.0], [float("inf")]), R),
        ("BoxUniform(shapes differ)", lambda: ff.sbi.BoxUniform([0.0, 0.0], [1.0]), R),
        ("BoxUniform(empty)", lambda: ff.sbi.BoxUniform([], []), R),
        ("NPE(prior='box')", lambda: ff.sbi.NPE("box"), R),  # type: ignore[arg-type]
        ("NPE(flow='nosuch')", lambda: ff.sbi.NPE(prior, flow="nosuch"), R),
        ("NPE(flow='glow')", lambda: ff.sbi.NPE(prior, flow="glow").fit(theta, x, max_steps=2),
         R),
        ("NPE(z_score='x')", lambda: ff.sbi.NPE(prior, z_score_x="x"), R),
        ("NPE.fit(theta wrong width)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            theta[:, :1], x, max_steps=2), R),
        ("NPE.fit(row counts differ)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            theta, x[:-1], max_steps=2), R),
        ("NPE.fit(all theta NaN)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            t_nan, x, max_steps=2), R),
        ("NPE.fit(theta out of prior)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            theta * 10, x, max_steps=2), R),
        ("NPE.fit(max_steps=0)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            theta, x, max_steps=0), R),
        ("NPE.fit(lr=-1)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            theta, x, max_steps=2, lr=-1.0), R),
        ("NPE.fit(2 simulations)", lambda: ff.sbi.NPE(prior, flow_options=opts).fit(
            theta[:2], x[:2], max_steps=2), R),
        ("FMPE.fit(row counts differ)", lambda: ff.sbi.FMPE(prior).fit(
            theta, x[:-1], max_steps=2), R),
        ("FMPE.fit(theta 1-D)", lambda: ff.sbi.FMPE(prior).fit(theta[:, 0], x, max_steps=2), R),
        ("posterior.sample(0)", lambda: post.sample(0, xo), R),
        ("posterior.sample(-1)", lambda: post.sample(-1, xo), R),
        ("posterior.sample(10**30)", lambda: post.sample(10**30, xo), R),
        ("posterior.sample(x_o wrong width)", lambda: post.sample(5, torch.zeros(3)), R),
        ("posterior.sample(x_o NaN)", lambda: post.sample(5, torch.tensor([float("nan"), 0])),
         R),
        ("posterior.sample(x_o list)", lambda: post.sample(5, [0.5, -0.5]), OK),
        ("posterior.sample(x_o strings)", lambda: post.sample(5, ["a", "b"]), R),
        ("posterior.log_prob(theta out of prior)", lambda: post.log_prob(
            torch.tensor([[5.0, 0.0]]), xo), OK),
        ("posterior.log_prob(theta wrong width)", lambda: post.log_prob(torch.zeros(2, 3), xo),
         R),
        ("posterior.log_prob(theta NaN)", lambda: post.log_prob(
            torch.tensor([[float("nan"), 0.0]]), xo), R),
        ("posterior.map(x_o wrong width)", lambda: post.map(torch.zeros(5)), R),
        ("posterior.save(a file)", lambda: post.save(Path(tempfile.mkstemp()[1])), R),
        ("sbi.load(missing)", lambda: ff.sbi.load("nosuch-run"), R),
        ("sbi.simulate(n=0)", lambda: ff.sbi.simulate(lambda t: t, prior, 0), R),
        ("sbi.simulate(wrong rows)", lambda: ff.sbi.simulate(lambda t: t[:1], prior, 5), R),
        ("sbi.get_task('nosuch')", lambda: ff.sbi.get_task("nosuch"), R),
    ]  # fmt: skip
    return cases


def main(out: Path, sections: set[str]) -> int:
    """Run the cases of ``sections`` (subcommand names, and ``lib``); each row is appended to
    ``out`` as soon as it is known."""
    torch.set_num_threads(1)
    rows: list[tuple[str, str, Outcome]] = []
    out.write_text("| input | expected | clean | outcome |\n|---|---|---|---|\n")

    def record(text: str, expect: str, o: Outcome) -> None:
        rows.append((text, expect, o))
        cell = o.what.replace("|", "\\|").replace("\n", " ")
        with out.open("a") as f:
            f.write(f"| `{text.replace('|', '/')}` | {expect} | {'yes' if o.clean else 'NO'} "
                    f"| {cell} |\n")  # fmt: skip
        if not o.clean:
            print(f"NOT CLEAN: {text}\n   {o.what}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.time()
        setup(root)
        print(f"setup {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
        for args, expect in cli_cases():
            if args[0] not in sections:
                continue
            record("flowforge " + " ".join(args), expect, cli(args, expect, root))
            for name in ("new", "s.npy", "x.txt", "p.txt", "s.csv"):
                p = root / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        if "lib" in sections:
            os.chdir(root)
            for name, fn, expect in lib_cases():
                record(name, expect, lib(fn, expect))
            os.chdir("/")
    bad = [r for r in rows if not r[2].clean]
    print(f"{len(rows)} inputs, {len(bad)} not clean -> {out}", file=sys.stderr)
    return 0


ALL = {"train", "eval", "sample", "score", "datasets", "vi", "sbi", "lib"}

if __name__ == "__main__":
    chosen = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else ALL
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "bad_input_pass.md"), chosen))
