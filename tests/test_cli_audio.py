"""``flowforge train --flow waveglow`` on a folder of audio clips, and the audio figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import flowforge as ff
from cli_util import assert_bad_input, assert_ok, run_cli
from flowforge.data import load_dataset
from flowforge.data.audio import mel_features
from flowforge.data.base import dequantize
from flowforge.eval.audio import (
    MEL_GAIN_ROUNDS,
    TEMPERATURES,
    log_spectral_distance,
    match_mel,
    nats_per_sample,
    resynthesize,
    source_estimate,
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
    (cwd / "stdout.txt").write_text(proc.stdout)  # the report, for the tests to read
    return cwd / "run"


@pytest.fixture(scope="module")
def audio_run(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vocoder conditioned on each segment's mel frames, without a source (the plain flow;
    the command line's default centres it on Griffin-Lim, ``gl_run``)."""
    options = '{"depth": 2, "hidden": 4, "layers": 2, "group": 4, "source": "none"}'
    return _train(clips, tmp_path_factory.mktemp("run"), "--flow-options", options)


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
    assert "anchored" not in run.spec.kwargs  # no source: the flow's own default
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
    assert 0 < voc["griffin_lim_lsd_db"] < voc["flow_lsd_db"]  # 4 steps: the draw alone
    # the temperature and the mel gain's rounds: the best pair on the validation segments
    rounds, by_gain = voc["mel_gain_rounds"], voc["val_lsd_by_mel_gain"]
    assert sorted(map(int, by_gain)) == sorted(MEL_GAIN_ROUNDS) and rounds > 0
    assert by_gain[str(rounds)] == min(by_gain.values())
    assert by_gain[str(rounds)] <= min(voc["val_lsd_by_temperature"].values())
    assert by_gain["0"] == voc["val_lsd_by_temperature"][str(voc["temperature"])]
    # the reported distance is the vocoder's output with that gain, recomputed here
    idx = torch.tensor([0, len(ds.test) - 1])[: voc["test_segments"]]
    x = (ds.test[idx, 0].double().numpy() - 32768) / 32768
    y = resynthesize(run.flow, mel[idx], voc["temperature"], mel_gain=rounds, rate=16000)
    assert math.isclose(
        voc["lsd_db"], float(log_spectral_distance(y, x, 16000).mean()), rel_tol=1e-6
    )
    for name in ("test0.wav", "test0_resynthesis.wav", "test1_griffin_lim.wav"):
        wave, rate = sf.read(audio_run / name)
        assert rate == 16000 and wave.shape == (4096,) and np.isfinite(wave).all()
    assert not (audio_run / "sample0.wav").exists()
    assert (audio_run / "spectrograms.png").stat().st_size > 5000
    # the test WAV is the held-out segment itself, to 16 bits
    wave, _ = sf.read(audio_run / "test0.wav", dtype="int16")
    assert np.array_equal(wave.astype(np.float64) + 32768, ds.test[0, 0].double().numpy())


@pytest.fixture(scope="module")
def gl_run(clips: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vocoder centred on the Griffin-Lim estimate from its mel, with a learned refinement
    of its magnitudes: at a low temperature its resynthesis is the mel's, so it shows which
    mel frames it was given."""
    options = (
        '{"depth": 2, "hidden": 4, "layers": 2, "group": 4, "source": "griffin-lim", '
        '"source_refine": 2}'
    )
    return _train(clips, tmp_path_factory.mktemp("gl"), "--flow-options", options)


def test_a_vocoder_centred_on_griffin_lim_reports_the_estimate_alone(
    gl_run: Path, clips: Path
) -> None:
    """``source: griffin-lim``: the run records the sample rate the source needs, reloads, and
    reports the estimate's own distance beside the flow's and Griffin-Lim's (librosa's)."""
    root = gl_run
    run = open_run(root, torch.device("cpu"))
    assert run.spec.kwargs["source"] == "griffin-lim" and run.spec.kwargs["sample_rate"] == 16000
    assert run.spec.kwargs["source_nnls"] == "accelerated"  # stored: an old run loads "projected"
    # a source-centred vocoder's default: anchored couplings, no offsets, stored with the run;
    # a saved spec without them (an old run) rebuilds the flow it trained: offsets, unanchored
    assert run.spec.kwargs["offsets"] is False and run.spec.kwargs["anchored"] is True
    assert any(isinstance(m, ff.nn.AnchoredOutput) for m in run.flow.modules())
    old = {k: v for k, v in run.spec.kwargs.items() if k not in ("offsets", "anchored")}
    rebuilt = ff.flows.PRESETS["waveglow"](**old)
    assert not any(isinstance(m, ff.nn.AnchoredOutput) for m in rebuilt.modules())
    assert all(
        m.loc.requires_grad for m in rebuilt.modules() if isinstance(m, ff.transforms.ActNorm)
    )
    # the refinement was fitted before the flow trained, and its weights were saved
    assert json.loads((root / "config.json").read_text())["source_fit"]["steps"] > 0
    (gl,) = [m for m in run.flow.modules() if isinstance(m, ff.nn.MelGriffinLim)]
    assert gl.refiner is not None and gl.refiner[-1].weight.abs().max() > 0
    assert (root / "test0_estimate.wav").is_file()  # the estimate alone, beside the flow's
    voc = json.loads((root / "results.json").read_text())["audio"]["vocoder"]
    # the torch estimate and librosa's Griffin-Lim invert the same mel: within a few dB
    assert abs(voc["source_lsd_db"] - voc["griffin_lim_lsd_db"]) < 3.0, voc
    assert voc["lsd_db"] > 0 and voc["temperature"] in TEMPERATURES
    # the estimate with the vocoder's own rounds of the gain, recomputed here, and the paired
    # difference of the vocoder's output from it (what the flow must beat to add anything)
    ds = load_dataset(str(clips), n_val=1, n_test=1)
    idx = torch.tensor([0, len(ds.test) - 1])[: voc["test_segments"]]
    mel = torch.from_numpy(mel_features(ds.test[idx], 16000))
    x = (ds.test[idx, 0].double().numpy() - 32768) / 32768
    s = source_estimate(run.flow, mel)
    rounds = voc["mel_gain_rounds"]
    with_gain = log_spectral_distance(match_mel(s, mel, 16000, rounds=rounds), x, 16000)
    assert math.isclose(voc["source_gain_lsd_db"], float(with_gain.mean()), rel_tol=1e-6)
    y = resynthesize(run.flow, mel, voc["temperature"], mel_gain=rounds, rate=16000)
    paired = log_spectral_distance(y, x, 16000) - with_gain
    assert math.isclose(voc["gain_minus_source_gain_db"], float(paired.mean()), abs_tol=1e-6)
    assert voc["gain_minus_source_gain_db_err"] == pytest.approx(
        2 * paired.std(ddof=1) / math.sqrt(len(idx)), rel=1e-5
    )
    report = (root.parent / "stdout.txt").read_text()  # the same figures, in the report
    assert (
        f"with the same gain {voc['source_gain_lsd_db']:.2f} dB (the vocoder "
        f"{voc['gain_minus_source_gain_db']:+.3f} ± {voc['gain_minus_source_gain_db_err']:.3f}"
    ) in report
    by_gain = voc["val_source_lsd_by_mel_gain"]
    assert sorted(map(int, by_gain)) == sorted(MEL_GAIN_ROUNDS)
    assert by_gain["0"] > by_gain[str(max(MEL_GAIN_ROUNDS))]  # the gain helps the estimate
    val_mel = torch.from_numpy(mel_features(ds.val, 16000))  # the one validation segment
    val_s = match_mel(source_estimate(run.flow, val_mel), val_mel, 16000, rounds=8)
    val_x = (ds.val[:, 0].double().numpy() - 32768) / 32768
    assert math.isclose(by_gain["8"], float(log_spectral_distance(val_s, val_x, 16000).mean()))


def test_flowforge_eval_conditions_on_the_test_mel_and_sample_refuses(audio_run: Path) -> None:
    proc = run_cli("eval", str(audio_run), cwd=audio_run.parent)
    assert_ok(proc)
    nll = json.loads((audio_run / "results.json").read_text())["test"]["nll"]
    assert f"test NLL: {nll:.4f}" in proc.stdout
    proc = run_cli("sample", str(audio_run), cwd=audio_run.parent)
    assert_bad_input(proc, "is a vocoder", "--mel-from CLIP.wav")
    proc = run_cli("score", str(audio_run), "--input", "rows.csv", cwd=audio_run.parent)
    assert_bad_input(proc, "rows.csv: no such file; expected a WAV clip")


def _clip_levels(path: Path) -> np.ndarray:
    """A 16 kHz 16-bit clip's whole 4096-sample segments as levels ``(N, 1, 4096)``, read here
    with soundfile, not through the data pipeline."""
    wave, rate = sf.read(path, dtype="int16")
    assert rate == 16000
    n = len(wave) // 4096 * 4096
    return wave[:n].astype(np.float64).reshape(-1, 1, 4096) + 32768


def _cross_faded(
    flow: Any, levels: np.ndarray, temperature: float, seed: int, mel_gain: int = 0
) -> np.ndarray:
    """A clip's resynthesis from segments every 2048 samples of a 4096-sample run, Hann
    cross-faded: segment k covers the clip's samples k 2048 - 2048 .. k 2048 + 2048; then
    ``mel_gain`` rounds of the mel gain towards the whole padded clip's mel."""
    flat = levels.reshape(-1)
    n = flat.size
    padded = np.concatenate([np.full(2048, 32768.0), flat, np.full(2 * 2048 + 4096, 32768.0)])
    starts = range(0, n + 2048, 2048)
    segs = np.stack([padded[s : s + 4096] for s in starts])[:, None]
    mel = torch.from_numpy(mel_features(segs, 16000, bands=40, hop=256))
    waves = resynthesize(flow, mel, temperature, seed=seed)
    out = np.zeros(padded.size)
    for s, w in zip(starts, waves, strict=True):
        out[s : s + 4096] += np.hanning(4097)[:4096] * w
    if mel_gain:
        whole = mel_features(padded[None, None], 16000, bands=40, hop=256)
        out = match_mel(out[None], whole, 16000, rounds=mel_gain)[0]
    return out[2048 : 2048 + n]


def test_sample_mel_from_resynthesises_a_users_clip_from_its_own_mel(
    gl_run: Path, clips: Path, tmp_path: Path
) -> None:
    run = open_run(gl_run, torch.device("cpu"))
    levels = _clip_levels(clips / "clip3.wav")  # two segments: a 200-ish Hz and a 1500 Hz tone
    args = ["sample", str(gl_run), "--mel-from", str(clips / "clip3.wav"), "--seed", "3"]
    proc = run_cli(*args, "--temperature", "0.01", "-o", "low.wav", cwd=tmp_path)
    assert_ok(proc)
    voc = json.loads((gl_run / "results.json").read_text())["audio"]["vocoder"]
    chosen, rounds = voc["temperature"], voc["mel_gain_rounds"]
    assert f"8192 samples at 16000 Hz, temperature 0.01, mel gain {rounds} rounds" in proc.stderr
    wave, rate = sf.read(tmp_path / "low.wav", dtype="int16")
    assert rate == 16000 and wave.shape == (8192,)
    expected = _cross_faded(run.flow, levels, 0.01, seed=3, mel_gain=rounds)
    assert np.abs(wave / 32768 - expected).max() <= 1.5 / 32768  # to 16 bits
    original = levels.reshape(-1) / 32768 - 1
    lsd = float(log_spectral_distance(wave / 32768, original, 16000))
    other = (_clip_levels(clips / "clip0.wav").reshape(-1)) / 32768 - 1
    assert lsd < float(log_spectral_distance(wave / 32768, other, 16000)) - 1.0
    # no --temperature: the run's chosen one
    assert_ok(run_cli(*args, "-o", "chosen.wav", cwd=tmp_path))
    wave, _ = sf.read(tmp_path / "chosen.wav", dtype="int16")
    expected = _cross_faded(run.flow, levels, chosen, seed=3, mel_gain=rounds)
    assert np.abs(wave / 32768 - expected).max() <= 1.5 / 32768
    # another rate and a length that is not whole segments: resampled, padded, cut back
    t = np.arange(5000) / 22050
    sf.write(tmp_path / "odd.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 22050, subtype="PCM_16")
    proc = run_cli(
        "sample", str(gl_run), "--mel-from", "odd.wav", "-o", "odd_out.wav", cwd=tmp_path
    )
    assert_ok(proc)
    wave, rate = sf.read(tmp_path / "odd_out.wav")
    assert rate == 16000 and wave.shape == (round(5000 * 16000 / 22050),)
    assert np.isfinite(wave).all()


def test_mel_gain_flag_overrides_the_run_and_an_old_run_resynthesises_without_it(
    gl_run: Path, clips: Path, tmp_path: Path
) -> None:
    """``--mel-gain 0`` is the flow's draw alone, as a run saved before the setting existed
    (no ``mel_gain_rounds``) resynthesises; a negative count is one clear line."""
    import shutil

    run = open_run(gl_run, torch.device("cpu"))
    levels = _clip_levels(clips / "clip1.wav")
    voc = json.loads((gl_run / "results.json").read_text())["audio"]["vocoder"]
    plain = _cross_faded(run.flow, levels, voc["temperature"], seed=0)
    old = tmp_path / "old"
    shutil.copytree(gl_run, old)
    results = json.loads((old / "results.json").read_text())
    del results["audio"]["vocoder"]["mel_gain_rounds"]  # the settings of an older run
    (old / "results.json").write_text(json.dumps(results))
    clip = str(clips / "clip1.wav")
    for name, argv in (
        ("off.wav", [str(gl_run), "--mel-gain", "0"]),
        ("old.wav", [str(old)]),
        ("two.wav", [str(old), "--mel-gain", "2"]),
    ):
        proc = run_cli("sample", *argv, "--mel-from", clip, "-o", name, cwd=tmp_path)
        assert_ok(proc)
        wave, _ = sf.read(tmp_path / name, dtype="int16")
        want = (
            plain if name != "two.wav" else _cross_faded(run.flow, levels, voc["temperature"], 0, 2)
        )
        assert np.abs(wave / 32768 - want).max() <= 1.5 / 32768, name
    assert np.abs(want - plain).max() > 1e-3  # the gain changes the output
    proc = run_cli(
        "sample", str(gl_run), "--mel-from", clip, "-o", "neg.wav", "--mel-gain", "-1", cwd=tmp_path
    )
    assert_bad_input(proc, "--mel-gain takes a number of rounds, 0 or more", "got -1")
    proc = run_cli("sample", str(gl_run), "--mel-gain", "4", cwd=tmp_path)
    assert_bad_input(proc, "--mel-gain", "with --mel-from only")
    assert not (tmp_path / "neg.wav").exists()


def test_score_gives_a_users_clip_nats_per_sample_given_its_own_mel(
    gl_run: Path, clips: Path, tmp_path: Path
) -> None:
    run = open_run(gl_run, torch.device("cpu"))
    proc = run_cli("score", str(gl_run), "--input", str(clips / "clip2.wav"), cwd=tmp_path)
    assert_ok(proc)
    lines = proc.stdout.splitlines()
    assert lines[0] == "nats_per_sample" and len(lines) == 3
    got = np.array([float(v) for v in lines[1:]])
    levels = _clip_levels(clips / "clip2.wav")
    # the documented noise: 16-bit levels dequantized with a generator seeded by --seed (0)
    u = dequantize(torch.from_numpy(levels).float(), 65536, torch.Generator().manual_seed(0))
    with torch.no_grad():
        mel = torch.from_numpy(mel_features(levels, 16000, bands=40, hop=256))
        own = run.flow.log_prob(u, mel).double().numpy() / 4096 - math.log(2)
        wrong = run.flow.log_prob(u, mel.flip(0)).double().numpy() / 4096 - math.log(2)
    np.testing.assert_allclose(got, own, rtol=0, atol=1e-5)
    assert np.abs(wrong - own).min() > 1e-3  # the mel matters: a swapped one is caught
    assert f"{own.mean():.4f} nats per sample given its own mel (2 segments" in proc.stderr
    out = tmp_path / "scores.npy"
    assert_ok(
        run_cli("score", str(gl_run), "-i", str(clips / "clip2.wav"), "-o", out, cwd=tmp_path)
    )
    np.testing.assert_allclose(np.load(out), got, atol=1e-8)


def test_a_clip_on_the_wrong_run_or_a_bad_clip_is_one_clear_line(
    audio_run: Path, plain_run: Path, clips: Path, tmp_path: Path
) -> None:
    clip = str(clips / "clip0.wav")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.wav").write_bytes(b"not a RIFF file at all")
    sf.write(tmp_path / "short.wav", np.zeros(1000), 16000, subtype="PCM_16")
    run = str(audio_run)
    cases = [
        (["sample", run, "--mel-from", "nope.wav", "-o", "o.wav"], ["nope.wav: no such file"]),
        (["sample", run, "--mel-from", "notes.txt", "-o", "o.wav"], ["expected a .wav"]),
        (["sample", run, "--mel-from", "fake.wav", "-o", "o.wav"], ["cannot read audio file"]),
        (["sample", run, "--mel-from", clip], ["give -o FILE.wav"]),
        (["sample", run, "--mel-from", clip, "-o", "o.png"], ["unsupported output type"]),
        (["sample", run, "--mel-from", clip, "-o", "o.wav", "-n", "3"], ["--num"]),
        (["sample", str(plain_run), "--mel-from", clip, "-o", "o.wav"], ["an unconditional flow"]),
        (["score", str(plain_run), "--input", clip], ["gives a vocoder", "unconditional"]),
        (["score", run, "--input", "fake.wav"], ["cannot read audio file"]),
        (["score", run, "--input", "short.wav"], ["1000 samples", "whole segments of 4096"]),
        (["score", run, "--input", clip, "--labels", "y"], ["--labels applies to table rows"]),
    ]
    for argv, fragments in cases:
        assert_bad_input(run_cli(*argv, cwd=tmp_path), *fragments)
    assert not (tmp_path / "o.wav").exists() and not (tmp_path / "o.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.wav", "notes.txt", "short.wav"]


def test_a_run_conditioned_on_something_else_is_refused_generically() -> None:
    """A context that is not mel frames (classes, say): neither pointed to --mel-from nor
    given a clip."""
    from types import SimpleNamespace

    from flowforge.cli._common import refuse_context, vocoder_settings
    from flowforge.runs import RunError

    spec = SimpleNamespace(kind="image", kwargs={"context": 10}, data_shape=(1, 8, 8))
    run: Any = SimpleNamespace(spec=spec, files=SimpleNamespace(results=Path("/nonexistent")))
    with pytest.raises(RunError, match="conditioned on a per-example context") as e:
        refuse_context(run, "r", "sample", "--mel-from")
    assert "--mel-from" not in str(e.value)
    with pytest.raises(RunError, match="other than mel frames of image data"):
        vocoder_settings(run, "r", "--mel-from")


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


def test_a_source_centred_vocoder_defaults_to_anchored_couplings_without_offsets() -> None:
    """``spec_for``: with a source and neither option given, ``offsets=False, anchored=True``
    are set and saved; ``offsets`` given true keeps the couplings unanchored; given options
    win; a vocoder without a source keeps the flow's defaults (nothing stored)."""
    from types import SimpleNamespace

    from flowforge.train.config import TrainConfig
    from flowforge.train.model import spec_for

    ds = SimpleNamespace(
        kind="audio", event_shape=(1, 4096), context_dim=40 * 16, sample_rate=16000,
        name="speech", levels=65536, standardizer=None, dim=4096,
    )  # fmt: skip

    def kwargs(**options: Any) -> dict[str, Any]:
        cfg = TrainConfig(flow="waveglow", flow_options=options)
        return spec_for(cfg, ds).kwargs

    new = kwargs(source="griffin-lim")
    assert new["offsets"] is False and new["anchored"] is True
    assert kwargs(source="griffin-lim", offsets=True)["anchored"] is False
    assert kwargs(source="griffin-lim", anchored=False)["offsets"] is False
    plain = kwargs(source="none")
    assert "offsets" not in plain and "anchored" not in plain


def test_a_vocoder_defaults_to_the_refined_anchored_griffin_lim_source() -> None:
    """``spec_for``: a vocoder given no source is centred on the refined Griffin-Lim estimate
    (:data:`VOCODER_SOURCE`) and anchored, all stored with the run; ``source: none`` gives the
    plain flow (no refinement, no anchoring); an unconditional WaveGlow has no source; a saved
    spec without ``source`` (an old run) rebuilds the plain flow it trained."""
    from types import SimpleNamespace

    from flowforge.nn.griffin_lim import MelGriffinLim
    from flowforge.runs.recipe import ModelSpec, build_flow
    from flowforge.train.config import TrainConfig
    from flowforge.train.model import VOCODER_SOURCE, spec_for

    def kwargs(context: int = 4 * 2, **options: Any) -> dict[str, Any]:
        ds = SimpleNamespace(
            kind="audio", event_shape=(1, 64), context_dim=context, sample_rate=16000,
            name="speech", levels=65536, standardizer=None, dim=64,
        )  # fmt: skip
        cfg = TrainConfig(flow="waveglow", flow_options=options)
        return spec_for(cfg, ds).kwargs

    assert VOCODER_SOURCE == {"source": "griffin-lim", "source_refine": 128}
    new = kwargs()
    assert new["source"] == "griffin-lim" and new["source_refine"] == 128
    assert new["offsets"] is False and new["anchored"] is True
    assert kwargs(source_refine=0)["source_refine"] == 0  # a given option wins
    plain = kwargs(source="none")
    assert plain["source"] == "none" and not {"source_refine", "offsets", "anchored"} & set(plain)
    assert not {"source", "source_refine", "offsets", "anchored"} & set(kwargs(context=0))
    small = {"depth": 1, "hidden": 2, "layers": 1, "group": 4, "frame_features": 4}
    spec = ModelSpec(preset="waveglow", kwargs={**new, **small}, kind="audio", data_shape=(1, 64))
    old = {k: v for k, v in spec.to_dict()["kwargs"].items() if k not in VOCODER_SOURCE}
    old = {k: v for k, v in old.items() if k not in ("offsets", "anchored")}  # saved before
    loaded = ModelSpec.from_dict({**spec.to_dict(), "kwargs": old})
    assert "source" not in loaded.kwargs and "anchored" not in loaded.kwargs
    assert not any(isinstance(m, MelGriffinLim) for m in build_flow(loaded).modules())
