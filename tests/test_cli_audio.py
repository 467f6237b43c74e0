"""``flowforge train --flow waveglow`` on a folder of audio clips, and the audio figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_util import assert_bad_input, assert_ok, run_cli
from flowforge.data import load_dataset
from flowforge.data.audio import mel_features
from flowforge.eval.audio import (
    TEMPERATURES,
    log_spectral_distance,
    nats_per_sample,
    synthesis_speed,
)
from flowforge.eval.splits import prepare_split
from flowforge.runs import open_run

sf = pytest.importorskip("soundfile", reason="audio needs pip install flowforge[audio]")
pytest.importorskip("librosa", reason="audio needs pip install flowforge[audio]")

SMALL = ["--quiet", "--flow-options", '{"depth": 2, "hidden": 4, "layers": 2, "group": 4}']


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    for i in range(5):
        t = np.arange(8192) / 16000
        freq = np.where(t < 0.256, 200 + 40 * i, 1500 + 40 * i)  # each segment its own tone
        wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(8192)
        sf.write(root / f"clip{i}.wav", wave, 16000, subtype="PCM_16")
    return root


def _train(clips: Path, cwd: Path, *extra: str) -> Path:
    args = ["--data", str(clips), "--flow", "waveglow", *SMALL, "--steps", "4", *extra]
    proc = run_cli(
        "train",
        *args,
        "--eval-every",
        "2",
        "--warmup-steps",
        "1",
        "--n-val",
        "1",
        "--n-test",
        "1",
        "--out",
        "run",
        cwd=cwd,
    )
    assert_ok(proc)
    assert "nats per sample" in proc.stdout and "samples/s" in proc.stdout
    return cwd / "run"


@pytest.fixture(scope="module")
def audio_run(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default audio run: a vocoder, conditioned on each segment's mel frames."""
    return _train(clips, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def plain_run(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unconditional audio run."""
    return _train(clips, tmp_path_factory.mktemp("plain"), "--condition", "none")


def test_audio_run_reports_per_sample_figures(audio_run: Path) -> None:
    results = json.loads((audio_run / "results.json").read_text())
    audio, test = results["audio"], results["test"]
    assert audio["sample_rate"] == 16000 and audio["synthesis_samples_per_s"] > 0
    # nats per sample of x in [-1, 1) = -(NLL per segment of u in [0, 1)) / T - log 2
    assert math.isclose(
        audio["test_ll_nats_per_sample"], -test["nll"] / 4096 - math.log(2), rel_tol=1e-9
    )
    assert math.isclose(audio["bits_per_sample"], test["bpd"])
    # bits per sample: (NLL + T log 65536) / (T log 2) for levels dequantized to [0, 1)
    assert math.isclose(
        test["bpd"], (test["nll"] + 4096 * math.log(65536)) / (4096 * math.log(2)), rel_tol=1e-6
    )


def test_an_unconditional_run_writes_samples_and_a_spectrogram(plain_run: Path) -> None:
    for name in ("test0.wav", "sample0.wav", "sample2.wav"):
        wave, rate = sf.read(plain_run / name)
        assert rate == 16000 and wave.shape == (4096,) and np.isfinite(wave).all()
    assert (plain_run / "spectrograms.png").stat().st_size > 5000
    run = open_run(plain_run, torch.device("cpu"))
    assert run.spec.kind == "audio" and run.spec.levels == 65536
    assert run.spec.kwargs["context"] == 0
    assert "vocoder" not in json.loads((plain_run / "results.json").read_text())["audio"]


def test_the_vocoder_is_trained_and_tested_given_each_segments_mel(
    audio_run: Path, clips: Path
) -> None:
    run = open_run(audio_run, torch.device("cpu"))
    assert run.spec.kwargs["context"] == 40 * 16 and run.spec.kwargs["frame_features"] == 40
    assert run.spec.pretransform == "centre" and run.spec.logit_alpha is None  # u -> 2u - 1
    config = json.loads((audio_run / "config.json").read_text())["config"]
    assert config["ema_decay"] == 0.0  # audio's default: no average over a short run
    results = json.loads((audio_run / "results.json").read_text())
    # the test NLL is log p(u | its own mel): recomputed here from the test levels
    ds = load_dataset(str(clips), n_val=1, n_test=1)
    test_u = prepare_split(ds, "test", 0)  # the run's seeded dequantization of the test rows
    mel = torch.from_numpy(mel_features(ds.test, 16000))
    with torch.no_grad():
        own = -run.flow.log_prob(test_u, mel).double().mean()
        quiet = mel.new_full(mel.shape, float(mel.min()))  # the quietest frame everywhere
        other = -run.flow.log_prob(test_u, quiet).double().mean()
    assert math.isclose(results["test"]["nll"], float(own), rel_tol=1e-6)
    assert abs(results["test"]["nll"] - float(other)) > 1e-2  # 4 steps: the mel matters
    voc = results["audio"]["vocoder"]
    assert voc["test_segments"] == 2 and voc["temperature"] in TEMPERATURES
    assert "source_lsd_db" not in voc  # no source: nothing to report
    assert voc["lsd_db"] > 0 and 0 < voc["griffin_lim_lsd_db"] < voc["lsd_db"]  # 4 steps
    for name in ("test0.wav", "test0_resynthesis.wav", "test1_griffin_lim.wav"):
        wave, rate = sf.read(audio_run / name)
        assert rate == 16000 and wave.shape == (4096,) and np.isfinite(wave).all()
    assert not (audio_run / "sample0.wav").exists()
    assert (audio_run / "spectrograms.png").stat().st_size > 5000
    # the test WAV is the held-out segment itself, to 16 bits
    wave, _ = sf.read(audio_run / "test0.wav", dtype="int16")
    assert np.array_equal(wave.astype(np.float64) + 32768, ds.test[0, 0].double().numpy())


def test_a_vocoder_centred_on_griffin_lim_reports_the_estimate_alone(
    clips: Path, tmp_path: Path
) -> None:
    """``source: griffin-lim``: the run records the sample rate the source needs, reloads, and
    reports the estimate's own distance beside the flow's and Griffin-Lim's (librosa's)."""
    options = '{"depth": 2, "hidden": 4, "layers": 2, "group": 4, "source": "griffin-lim"}'
    root = _train(clips, tmp_path, "--flow-options", options)
    run = open_run(root, torch.device("cpu"))
    assert run.spec.kwargs["source"] == "griffin-lim" and run.spec.kwargs["sample_rate"] == 16000
    voc = json.loads((root / "results.json").read_text())["audio"]["vocoder"]
    # the torch estimate and librosa's Griffin-Lim invert the same mel: within a few dB
    assert abs(voc["source_lsd_db"] - voc["griffin_lim_lsd_db"]) < 3.0, voc
    assert voc["lsd_db"] > 0 and voc["temperature"] in TEMPERATURES


def test_flowforge_eval_conditions_on_the_test_mel_and_sample_refuses(audio_run: Path) -> None:
    proc = run_cli("eval", str(audio_run), cwd=audio_run.parent)
    assert_ok(proc)
    nll = json.loads((audio_run / "results.json").read_text())["test"]["nll"]
    assert f"test NLL: {nll:.4f}" in proc.stdout
    assert_bad_input(run_cli("sample", str(audio_run), cwd=audio_run.parent), "conditioned")


def test_condition_on_data_that_are_not_audio_is_refused(tmp_path: Path) -> None:
    proc = run_cli("train", "--data", "moons", "--condition", "none", "--steps", "1", cwd=tmp_path)
    assert_bad_input(proc, "--condition none conditions an audio flow")


def test_logit_alpha_on_audio_is_refused(clips: Path, tmp_path: Path) -> None:
    args = ["--data", str(clips), "--flow", "waveglow", "--logit-alpha", "0.01", "--steps", "1"]
    proc = run_cli("train", *args, "--n-val", "1", "--n-test", "1", "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, "--logit-alpha", "takes the waveform 2u - 1")
    assert not (tmp_path / "r").exists()


def test_an_image_preset_on_audio_is_one_clear_error(clips: Path, tmp_path: Path) -> None:
    proc = run_cli(
        "train",
        "--data",
        str(clips),
        "--flow",
        "glow",
        "--steps",
        "1",
        "--quiet",
        "--out",
        "run",
        cwd=tmp_path,
    )
    assert_bad_input(proc, "shape=(C, H, W)")


def test_nats_per_sample_of_a_known_density() -> None:
    """A standard normal per sample of x: -NLL/T of u = (x+1)/2 is log N(x) + log 2."""
    x = torch.randn(10_000, dtype=torch.float64) * 0.1
    log_px = torch.distributions.Normal(0.0, 0.1).log_prob(x).sum()
    nll_u = -(log_px + x.numel() * math.log(2.0))  # u = (x+1)/2 has density 2 p(x)
    assert math.isclose(nats_per_sample(float(nll_u), x.numel()), float(log_px) / x.numel())


def test_log_spectral_distance_orders_distortions() -> None:
    t = np.arange(8192) / 16000
    x = np.sin(2 * np.pi * 300 * t) + 0.5 * np.sin(2 * np.pi * 1200 * t)
    rng = np.random.default_rng(0)
    slight = x + 0.01 * rng.standard_normal(x.size)
    heavy = x + 0.3 * rng.standard_normal(x.size)
    d = [float(log_spectral_distance(y, x, 16000)) for y in (x, slight, heavy)]
    assert d[0] == 0.0 and 0 < d[1] < d[2]
    # twice the amplitude of broadband noise: 20 log10(2) dB in every band and frame
    noise = 0.1 * rng.standard_normal(x.size)
    assert math.isclose(
        float(log_spectral_distance(2 * noise, noise, 16000)), 20 * math.log10(2), rel_tol=1e-3
    )


def test_synthesis_speed_counts_samples() -> None:
    import flowforge as ff

    flow = ff.flows.WaveGlow((1, 256), depth=2, hidden=4, layers=2, group=4)
    assert synthesis_speed(flow, 2, repeats=1) > 256
