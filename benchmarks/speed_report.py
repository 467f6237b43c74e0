"""The speed benchmark's report: the results record and its markdown tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import speed_cnf
from speed_common import CNF_FLOWS, HIDDEN, LIBS, QUICK_NOTE, TRANSFORMS
from speed_timing import paired_ratio


@dataclass
class Results:
    """Everything measured, keyed by ``flow/D``."""

    meta: dict[str, Any] = field(default_factory=dict)
    params: dict[str, dict[str, int]] = field(default_factory=dict)
    times: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # key/op/lib
    compiled: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Per-repetition times (key/op/lib), for paired ratios; "compiled/" + key for compiled.
    samples: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    memory: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    flops: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _fmt_t(t: float | None) -> str:
    if t is None or math.isnan(t):
        return "n/a"
    return f"{t * 1e3:.2f}" if t < 10 else f"{t:.1f}s"


def _time_table(
    title: str,
    table: dict[str, dict[str, dict[str, float]]],
    libs: list[str],
    samples: dict[str, dict[str, dict[str, list[float]]]] | None = None,
    prefix: str = "",
) -> str:
    lines = [
        f"### {title} (median ms; ratio = fastest peer / flowforge, > 1 means we are faster;",
        "each peer's ratio is the median of its per-repetition ratios, see `paired_ratio`)",
        "",
        "| flow | D | op | " + " | ".join(libs) + " | fastest peer / ours |",
        "|---|---|---|" + "---|" * len(libs) + "---|",
    ]
    for key, ops in table.items():
        flow, d = key.split("/")
        for op, by_lib in ops.items():
            cells = [_fmt_t(by_lib.get(lib)) for lib in libs]
            reps = (samples or {}).get(prefix + key, {}).get(op, {})
            ratios: dict[str, float] = {}
            for lib in libs[1:]:
                if lib not in by_lib or "flowforge" not in by_lib or math.isnan(by_lib[lib]):
                    continue
                if lib in reps and "flowforge" in reps:
                    ratios[lib] = paired_ratio(reps[lib], reps["flowforge"])
                else:
                    ratios[lib] = by_lib[lib] / by_lib["flowforge"]
            best = f"{min(ratios.values()):.2f}x" if ratios else "n/a"
            peer_ratios = ", ".join(f"{lib} {r:.2f}" for lib, r in ratios.items())
            lines.append(
                f"| {flow} | {d} | {op} | " + " | ".join(cells) + f" | **{best}** ({peer_ratios}) |"
            )
    return "\n".join(lines)


def markdown(res: Results) -> str:
    """The results as markdown tables."""
    libs = [lib for lib in LIBS if lib in res.meta["libs"]]
    out = [
        "## flowforge speed benchmark",
        "",
        "Machine: "
        + ", ".join(
            f"{k}={v}"
            for k, v in res.meta.items()
            if k not in ("libs", "sizes", "image_sizes", "glow")
        ),
        f"Batch sizes: {res.meta['sizes']}. K={TRANSFORMS} transforms, hidden {HIDDEN}, float32.",
    ]
    if res.meta.get("quick"):
        out.insert(1, f"\n**{QUICK_NOTE}**\n")
    if any(key.split("/")[0] in CNF_FLOWS for key in res.params):
        out.append(
            f"FFJORD: D={speed_cnf.CNF_DIM}, one CNF, dynamics hidden {speed_cnf.CNF_HIDDEN}, "
            f"dopri5 rtol=atol={speed_cnf.TOL}, exact trace, batch sizes as above, float32."
        )
    if "glow" in res.meta:
        g = res.meta["glow"]
        out.append(
            f"Glow: image {tuple(g['image'])}, {g['levels']} levels x {g['steps']} steps, conv "
            f"width {g['hidden']}, batch sizes {res.meta['image_sizes']}, float32."
        )
    out += [
        "",
        "### Parameters (must match within a few percent)",
        "",
        "| flow | D | " + " | ".join(libs) + " |",
        "|---|---|" + "---|" * len(libs),
    ]
    for key, by_lib in res.params.items():
        flow, d = key.split("/")
        ref = by_lib.get("flowforge", 0)
        cells = []
        for lib in libs:
            n = by_lib.get(lib)
            if n is None:
                cells.append("n/a")
            else:
                dev = (n - ref) / ref * 100 if ref else 0.0
                flag = "" if abs(dev) < 3 else " (VOID)"
                cells.append(f"{n:,} ({dev:+.1f}%){flag}" if lib != "flowforge" else f"{n:,}")
        out.append(f"| {flow} | {d} | " + " | ".join(cells) + " |")
    out += ["", _time_table("Eager", res.times, libs, res.samples)]
    if res.compiled:
        out += ["", _time_table("torch.compile", res.compiled, libs, res.samples, "compiled/")]
    if res.memory:
        out += [
            "",
            "### Peak memory above baseline (MiB; each library in its own process)",
            "",
            "| flow | D | op | " + " | ".join(libs) + " |",
            "|---|---|---|" + "---|" * len(libs),
        ]
        for key, ops in res.memory.items():
            flow, d = key.split("/")
            for op, mem in ops.items():
                cells = [
                    "n/a" if math.isnan(mem.get(lib, math.nan)) else f"{mem[lib]:.1f}"
                    for lib in libs
                ]
                out.append(f"| {flow} | {d} | {op} | " + " | ".join(cells) + " |")
    if res.flops:
        out += [
            "",
            "### Achieved GFLOP/s (matmul FLOPs only; % of a float32 torch.mm of the same shapes)",
            "",
            "| flow | D | op | GFLOP | mm peak GFLOP/s | " + " | ".join(libs) + " |",
            "|---|---|---|---|---|" + "---|" * len(libs),
        ]
        for key, f in res.flops.items():
            flow, d = key.split("/")
            for op, gkey, pkey, table in (
                ("log_prob", "gflop", "peak", res.times),
                ("train", "train_gflop", "train_peak", res.times),
                ("log_prob (compiled)", "gflop", "peak", res.compiled),
                ("train (compiled)", "train_gflop", "train_peak", res.compiled),
            ):
                if key not in table:
                    continue
                cells = []
                for lib in libs:
                    t = table.get(key, {}).get(op.split(" ")[0], {}).get(lib)
                    if t is None or math.isnan(t):
                        cells.append("n/a")
                    else:
                        g = f[gkey] / t
                        cells.append(f"{g:.1f} ({100 * g / f[pkey]:.0f}%)")
                out.append(
                    f"| {flow} | {d} | {op} | {f[gkey]:.2f} | {f[pkey]:.1f} | "
                    + " | ".join(cells)
                    + " |"
                )
    if res.notes:
        out += ["", "Notes:"] + [f"- {k}: {v}" for k, v in res.notes.items()]
    return "\n".join(out)
