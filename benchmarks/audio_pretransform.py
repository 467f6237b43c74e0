"""Which fixed map suits 16-bit audio before WaveGlow: the logit or the waveform itself.

An audio run's flow takes dequantized levels ``u = (v + U(0, 1)) / 65536`` in ``[0, 1)``; a
fixed pre-transform maps them to what the preset sees: the image logit
(``s = a + (1 - 2a) u``, ``log s - log(1 - s)``, ``a = 1e-3``) or ``2u - 1`` (``"centre"``,
the waveform in ``[-1, 1)``; ``u`` itself is the same model, since WaveGlow's first layer is
a data-initialised ActNorm). Each is trained the same way by ``flowforge train`` (the
built-in ``speech`` set, the vocoder conditioned on mel, the CLI's defaults and seed), one
after the other in this process, and the script prints the validation curve, the test
log-likelihood per sample, the resynthesis LSD and the time per step.

    OMP_NUM_THREADS=1 nice python benchmarks/audio_pretransform.py --steps 150
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

import flowforge.train.model as model
from flowforge.train.config import TrainConfig
from flowforge.train.model import preset_defaults
from flowforge.train.run import start_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--maps", default="logit,centre")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.maps.split(","):
        model.AUDIO_PRETRANSFORM = name
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig.from_layers(
                preset_defaults("waveglow"),
                {
                    "data": "speech",
                    "flow": "waveglow",
                    "steps": args.steps,
                    "eval_every": args.eval_every,
                    "seed": args.seed,
                    "threads": 1,
                    "quiet": True,
                    "plots": False,
                    "out": str(Path(tmp) / "run"),
                },
            )
            result = start_run(cfg)
            assert result is not None
            results = json.loads((result.run_dir / "results.json").read_text())
            curve = [
                (r["step"], round(r["val_nll"] / 4096, 4))
                for r in map(
                    json.loads, (result.run_dir / "metrics.jsonl").read_text().splitlines()
                )
            ]
        audio = results["audio"]
        row = {
            "pretransform": name,
            "steps": results["steps"],
            "seconds_per_step": round(results["seconds"] / results["steps"], 3),
            "val_nll_per_sample_curve": curve,
            "test_ll_nats_per_sample": round(audio["test_ll_nats_per_sample"], 4),
            "err_2se": round(audio["test_ll_nats_per_sample_err"], 4),
            "bits_per_sample": round(audio["bits_per_sample"], 4),
            "lsd_db": round(audio["vocoder"]["lsd_db"], 2),
            "griffin_lim_lsd_db": round(audio["vocoder"]["griffin_lim_lsd_db"], 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
