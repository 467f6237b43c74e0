"""The built-in ``speech`` set: sentences spoken by espeak-ng on this machine, once, then cached.

The ``espeakng-loader`` wheel (the ``audio`` extra) bundles the espeak-ng library and its voice
data, so the set needs no download: the first load synthesises :data:`SENTENCES` (one voice,
US English, a few speaking rates and pitches) at espeak-ng's 22,050 Hz and writes them in
LJSpeech's layout, ``<data_dir>/speech/wavs/*.wav`` and ``metadata.csv`` (atomically: a
temporary folder renamed into place). Later loads read the cache with
:func:`~flowforge.data.audio.load_audio_folder` (16 kHz, segments of 4,096 samples, 10% of the
clips for validation and 10% for test).

References:
    The eSpeak NG text-to-speech synthesizer. https://github.com/espeak-ng/espeak-ng
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .audio import load_audio_folder, require
from .base import DataError, Dataset

__all__ = ["SENTENCES", "load_speech", "speech_available", "speech_folder", "synthesize"]

#: What the built-in set says: plain sentences with varied sounds (the set's text, our own).
SENTENCES = (
    "A flow maps every sound to a point of noise and back again.",
    "The river ran quietly past the old mill at dawn.",
    "Seven bright kites drifted over the windy hill.",
    "She measured the room twice before she cut the carpet.",
    "Fresh bread and strong coffee filled the little kitchen.",
    "The train to the coast leaves at a quarter past nine.",
    "Thunder rolled across the valley as the rain began.",
    "He kept the letters in a box beneath the stairs.",
    "Small waves broke gently on the pebbles of the beach.",
    "Please check the numbers once more before you send them.",
    "The violin played a slow tune in the empty hall.",
    "Our garden grows beans, peas, and tall yellow flowers.",
    "A cold wind whistled through the gaps in the fence.",
    "The children laughed as the puppy chased its tail.",
    "Every map has a scale, a legend, and a compass rose.",
    "The lamp flickered twice and then went dark.",
    "Bees hummed among the lavender all afternoon.",
    "The judge asked the witness to speak more clearly.",
    "Frozen puddles cracked under our heavy boots.",
    "A fox crossed the road and vanished into the woods.",
    "The museum opens at ten and closes at six.",
    "Quick hands sorted the mail into thirty boxes.",
    "The recipe calls for two eggs and a cup of milk.",
    "Stars appeared one by one above the silent lake.",
    "The pilot announced a smooth landing in ten minutes.",
    "Moss covered the stones of the ancient bridge.",
    "Her voice echoed softly in the marble corridor.",
    "The clock in the tower struck twelve at midnight.",
    "We packed sandwiches, apples, and a flask of tea.",
    "The engine coughed, sputtered, and finally started.",
    "Six geese flew south in a long uneven line.",
    "The painter mixed blue and white to match the sky.",
    "Rain tapped against the window all through the night.",
    "A thin path wound between the rocks to the summit.",
    "The baker sold the last loaf just before noon.",
    "Shadows grew longer as the sun sank behind the hills.",
    "The team cheered when the final whistle blew.",
    "Old books smell of dust, glue, and faded ink.",
    "The ferry rocked gently on the grey harbour water.",
    "Listen carefully and you can hear the distant bells.",
)

#: Speaking rates (words per minute) and pitches (0 .. 99) the sentences are read at, in turn.
_STYLES = ((150, 40), (175, 50), (130, 60))
_LOCK = threading.Lock()
_ENGINE: dict[str, Any] = {}


def _engine() -> tuple[ctypes.CDLL, int]:
    """espeak-ng, initialised once per process in synchronous mode; its sample rate."""
    if "lib" not in _ENGINE:
        loader = require("espeakng_loader")
        lib = ctypes.CDLL(loader.get_library_path())
        rate = lib.espeak_Initialize(2, 0, str(loader.get_data_path()).encode(), 0)  # synchronous
        if rate <= 0:
            raise DataError(f"espeak-ng did not start (espeak_Initialize returned {rate})")
        _ENGINE.update(lib=lib, rate=rate)
    return _ENGINE["lib"], int(_ENGINE["rate"])


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def synthesize(
    text: str, rate_wpm: int = 160, pitch: int = 50, voice: str = "en-us"
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng (bundled by ``espeakng-loader``): 16-bit samples.

    Args:
        text: what to say.
        rate_wpm: speaking rate in words per minute.
        pitch: base pitch, 0 .. 99.
        voice: an espeak-ng voice name.

    Returns:
        ``(samples (T,) int16, sample rate in Hz)``.

    Example:
        >>> wave, rate = synthesize("Hello.")
        >>> rate, wave.dtype, wave.size > rate // 10
        (22050, dtype('int16'), True)
    """
    with _LOCK:
        lib, rate = _engine()
        chunks: list[np.ndarray] = []

        def collect(wav: Any, n: int, events: int) -> int:
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        callback = _CALLBACK(collect)  # kept alive until the synthesis returns
        lib.espeak_SetSynthCallback(callback)
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(1, int(rate_wpm), 0)  # espeakRATE
        lib.espeak_SetParameter(3, int(pitch), 0)  # espeakPITCH
        data = text.encode("utf-8")
        # position 0 (POS_CHARACTER = 1), no end, espeakCHARS_UTF8 = 1
        err = lib.espeak_Synth(data, ctypes.c_size_t(len(data) + 1), 0, 1, 0, 1, None, None)
        lib.espeak_Synchronize()
        if err != 0:
            raise DataError(f"espeak-ng could not speak {text!r} (error {err})")
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return wave.astype(np.int16), rate


def speech_folder(data_dir: Path) -> Path:
    """Where the synthesised set is cached: ``<data_dir>/speech``."""
    return data_dir / "speech"


def speech_available() -> bool:
    """Whether the packages the set needs (the ``audio`` extra) are installed."""
    try:
        for name in ("espeakng_loader", "soundfile", "soxr"):
            require(name)
    except DataError:
        return False
    return True


def _write_cache(folder: Path) -> None:
    sf = require("soundfile")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".speech-", dir=folder.parent))
    try:
        (tmp / "wavs").mkdir()
        rows = []
        for i, text in enumerate(SENTENCES):
            wpm, pitch = _STYLES[i % len(_STYLES)]
            wave, rate = synthesize(text, wpm, pitch)
            clip = f"speech-{i:03d}"
            sf.write(tmp / "wavs" / f"{clip}.wav", wave, rate, subtype="PCM_16")
            rows.append(f"{clip}|{text}|{text}")
        (tmp / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first: keep theirs
            if not (folder / "metadata.csv").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_speech(data_dir: Path, seed: int = 0) -> Dataset:
    """The built-in ``speech`` set, synthesised into ``<data_dir>/speech`` on first use.

    Args:
        data_dir: the data folder (see :func:`~flowforge.data.default_data_dir`).
        seed: seed of the split of the clips.

    Returns:
        The :class:`Dataset` (kind ``"audio"``, event shape ``(1, 4096)``, 16 kHz).
    """
    folder = speech_folder(data_dir)
    if not (folder / "metadata.csv").is_file():
        _write_cache(folder)
    return load_audio_folder(folder, rate=16000, segment=4096, seed=seed, name="speech")
