"""Audio data: the folder loader on fixture files, LJSpeech's layout, mel features, speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.data import DataError, list_datasets, load_dataset
from flowforge.data.audio import (
    AUDIO_LEVELS,
    load_audio_folder,
    log_mel,
    mel_context,
    mel_features,
    mel_magnitude,
    read_audio,
    to_levels,
)

sf = pytest.importorskip("soundfile", reason="audio needs pip install flowforge[audio]")
pytest.importorskip("librosa", reason="audio needs pip install flowforge[audio]")


def _tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def test_read_audio_mixes_to_mono_and_resamples(tmp_path: Path) -> None:
    stereo = np.stack([_tone(100, 1.0, 8000), -_tone(100, 1.0, 8000) * 0.5], axis=1)
    sf.write(tmp_path / "a.flac", stereo, 8000)
    x = read_audio(tmp_path / "a.flac", 16000)
    assert x.shape == (16000,)
    ref = 0.125 * np.sin(2 * np.pi * 100 * np.arange(16000) / 16000)  # (0.5 - 0.25) / 2
    assert np.abs(x[200:-200] - ref[200:-200]).max() < 2e-3  # FLAC's 16 bits + resampling


def test_levels_are_16_bit_and_exact_in_float32() -> None:
    v = to_levels(np.array([-1.0, -1 / 32768, 0.0, 0.5, 1.0]))
    assert v.tolist() == [0, 32767, 32768, 49152, AUDIO_LEVELS - 1]
    assert torch.tensor(v, dtype=torch.float32).tolist() == v.tolist()


def _ljspeech(root: Path, clips: int, rate: int = 22050) -> None:
    (root / "wavs").mkdir(parents=True)
    rows = []
    for i in range(clips):
        sf.write(
            root / "wavs" / f"LJ001-{i:04d}.wav",
            _tone(200 + 50 * i, 0.5, rate),
            rate,
            subtype="PCM_16",
        )
        rows.append(f"LJ001-{i:04d}|Text {i}.|Text {i}.")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    sf.write(root / "stray.wav", _tone(50, 3.0, rate), rate)  # not in the metadata: ignored


def test_ljspeech_layout_splits_by_clip(tmp_path: Path) -> None:
    _ljspeech(tmp_path, 10)
    ds = load_audio_folder(tmp_path, rate=8000, segment=1000, n_val=2, n_test=2, seed=3)
    # 0.5 s at 8 kHz = 4000 samples = 4 segments per clip; the stray file would add 24
    assert (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0]) == (24, 8, 8)
    assert ds.event_shape == (1, 1000) and ds.levels == AUDIO_LEVELS and ds.sample_rate == 8000

    # every segment of a clip lands in one split: the dominant frequencies never mix
    def freqs(t: torch.Tensor) -> set[int]:
        spec = np.abs(np.fft.rfft(t[:, 0].numpy() - 32768, axis=-1))
        return {round(int(f) / 1000 * 8000) for f in spec.argmax(-1)}

    assert not freqs(ds.train) & freqs(ds.test) and not freqs(ds.val) & freqs(ds.test)
    again = load_audio_folder(tmp_path, rate=8000, segment=1000, n_val=2, n_test=2, seed=3)
    assert again.test.equal(ds.test)


def test_a_plain_folder_through_load_dataset(tmp_path: Path) -> None:
    for i in range(4):
        sf.write(tmp_path / f"c{i}.wav", _tone(300, 0.3, 16000), 16000)
    ds = load_dataset(tmp_path, n_val=1, n_test=1)
    assert ds.kind == "audio" and ds.event_shape == (1, 4096) and ds.train.shape[0] == 2


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        ("missing", "does not exist"),
        ("two", "at least 3 WAV/FLAC clips"),
        ("short", "no whole segment of 4096"),
        ("corrupt", "cannot read audio file"),
        ("metadata", "has no file"),
    ],
)
def test_bad_folders_get_one_clear_error(tmp_path: Path, setup: str, match: str) -> None:
    root = tmp_path / "set"
    if setup != "missing":
        root.mkdir()
        n = 2 if setup == "two" else 3
        for i in range(n):
            sf.write(root / f"c{i}.wav", _tone(300, 0.1 if setup == "short" else 0.5, 16000), 16000)
    if setup == "corrupt":
        (root / "c0.wav").write_bytes(b"RIFF not really")
    if setup == "metadata":
        (root / "wavs").mkdir()
        (root / "metadata.csv").write_text("nothing|here\n")
    with pytest.raises(DataError, match=match):
        load_audio_folder(root, n_val=1, n_test=1)


def test_log_mel_frames_and_tone_band() -> None:
    x = np.stack([_tone(300, 0.512, 16000), _tone(3000, 0.512, 16000)])  # 8192 samples
    mel = log_mel(x, 16000, n_mels=40, hop=256)
    assert mel.shape == (2, 40, 32) and mel.dtype == np.float32
    low, high = mel[0].mean(-1).argmax(), mel[1].mean(-1).argmax()
    assert low < high  # the 3 kHz tone sits in a higher band
    with pytest.raises(DataError, match="not a multiple of hop 256"):
        log_mel(np.zeros(1000), 16000)


def test_mel_context_is_each_segments_own_mel(tmp_path: Path) -> None:
    for i in range(6):  # a different tone in every clip: segments of different clips differ
        sf.write(tmp_path / f"c{i}.wav", _tone(200 * (i + 1), 0.256 * 3, 8000), 8000)
    ds = mel_context(load_audio_folder(tmp_path, rate=8000, segment=1024, n_val=2, n_test=2))
    assert ds.context_dim == 40 * 4
    for split in ("train", "val", "test"):
        rows, context = getattr(ds, split), ds.context_of(split)
        assert context.shape == (rows.shape[0], 160)
        for i in (0, rows.shape[0] - 1):  # row i is the mel of segment i, from its levels
            x = (rows[i, 0].double().numpy() - 32768) / 32768
            mel = log_mel(x, 8000, n_mels=40, hop=256)  # (40, 4)
            assert np.allclose(context[i].numpy(), (mel / 4 + 2).ravel(), atol=1e-5)
    # the tones differ by clip, so a context of another split's rows would not match
    assert not torch.allclose(ds.context_of("val")[0], ds.context_of("test")[0], atol=0.1)
    # Griffin-Lim's input: the magnitudes back from the features
    mag = mel_magnitude(ds.context_of("test"))
    assert mag.shape == (ds.test.shape[0], 40, 4)
    assert np.allclose(
        np.log(mag[0]), mel_features(ds.test[:1], 8000)[0].reshape(40, 4) * 4 - 8, atol=1e-4
    )
    with pytest.raises(DataError, match="condition audio segments"):
        mel_context(load_dataset("moons", n_val=10, n_test=10))


def test_speech_is_listed_and_loads_offline(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader", reason="speech needs pip install flowforge[audio]")
    info = {i.name: i for i in list_datasets(tmp_path)}["speech"]
    assert info.kind == "audio" and info.available and info.event_shape == (1, 4096)
    ds = load_dataset("speech", data_dir=tmp_path)
    assert (tmp_path / "speech" / "metadata.csv").is_file()
    assert ds.sample_rate == 16000 and ds.train.shape[1:] == (1, 4096)
    assert ds.train.shape[0] > 200 and ds.test.shape[0] > 10
    loud = (ds.train - 32768).abs().amax(-1)
    assert float(loud.median()) > 3000  # speech, not silence
    again = load_dataset("speech", data_dir=tmp_path)  # from the cache
    assert again.test.equal(ds.test)
    with pytest.raises(DataError, match="keeps its published splits"):
        load_dataset("speech", data_dir=tmp_path, n_val=3)
