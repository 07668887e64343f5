"""espeak-ng speech synthesis into memory, through ctypes and the ``espeakng-loader`` wheel.

Why ctypes: the ``espeakng-loader`` wheel from PyPI ships ``libespeak-ng.so`` and its voice data, so
synthesis works without root and without the Debian package. We drive the library's C API in
synchronous mode: ``espeak_Synth`` returns after the whole text is rendered and our callback has
received every block of 16-bit samples (22,050 Hz mono).

Why fresh processes: the library keeps C globals that no API call resets (e.g. the phase of its
pitch "flutter" advances with every synthesised sample, and the random generator behind breathy
voices), so the same text sounds slightly different on a second call in the same process. Output is
a pure function of the *sequence* of calls made since the library was loaded. For byte-identical
corpora, :func:`synthesize_isolated` runs every batch in a new process that loads the library
afresh, and every utterance seeds the library's random generator first.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from serkit.errors import SerkitError

logger = logging.getLogger(__name__)

# Constants of espeak-ng's public header speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit() inside the library
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EE_OK = 0
_PARAM_RATE = 1
_PARAM_VOLUME = 2
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_PARAM_WORDGAP = 7

ESPEAK_SAMPLE_RATE = 22050  # what espeak-ng always renders at; checked when the library starts

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(SerkitError):
    """espeak-ng could not be loaded, did not know a voice, or produced no audio."""


@dataclass(frozen=True)
class Prosody:
    """espeak-ng's speech parameters (the ranges are the library's own).

    ``rate`` in words per minute (80-450, default 175); ``volume`` amplitude (0-200, default 100);
    ``pitch`` base pitch and ``pitch_range`` intonation range (0-100, default 50 each, relative to
    the voice); ``word_gap`` extra pause between words in units of 10 ms.
    """

    rate: int = 175
    volume: int = 100
    pitch: int = 50
    pitch_range: int = 50
    word_gap: int = 0

    def __post_init__(self) -> None:
        limits = {"rate": (80, 450), "volume": (0, 200), "pitch": (0, 100), "pitch_range": (0, 100),
                  "word_gap": (0, 100)}
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise EspeakError(f"prosody {name}={value!r} is outside espeak-ng's range {low}..{high} (integers)")


@dataclass(frozen=True)
class SynthRequest:
    """One utterance to synthesise: its words, an espeak-ng voice name and its prosody.

    ``seed`` seeds the library's random generator (aspiration noise of breathy voices) just before
    synthesis, so the request alone, plus the requests before it in the same process, fixes the
    output.
    """

    text: str
    voice: str
    prosody: Prosody = field(default_factory=Prosody)
    seed: int = 0


class Espeak:
    """The espeak-ng engine of this process.

    The C library is process-global (one set of globals, one callback), so create it through
    :func:`get_engine`, which keeps a single instance.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise EspeakError(
                "the Python package espeakng-loader (libespeak-ng and its voices) is not installed; "
                "run tools/install.sh or `pip install espeakng-loader`"
            ) from None
        self.library_path = espeakng_loader.get_library_path()
        try:
            self.data_path = espeakng_loader.get_data_path()
            self._lib = ctypes.CDLL(self.library_path)
        except (OSError, RuntimeError) as error:
            raise EspeakError(
                f"cannot load espeak-ng from {self.library_path}: {error}; reinstall espeakng-loader"
            ) from None
        self._declare_signatures()
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with voice data {self.data_path}; reinstall espeakng-loader")
        if self.sample_rate != ESPEAK_SAMPLE_RATE:
            raise EspeakError(
                f"libespeak-ng at {self.library_path} renders at {self.sample_rate} Hz, not {ESPEAK_SAMPLE_RATE}; "
                "install the espeakng-loader wheel serkit's tools/install.sh pins"
            )
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept on self: ctypes must not free it
        self._lib.espeak_SetSynthCallback(self._callback)
        self._libc = ctypes.CDLL(None)
        self._set_seed = getattr(self._lib, "espeak_ng_SetRandSeed", None)
        if self._set_seed is None:
            logger.warning("this libespeak-ng has no espeak_ng_SetRandSeed: breathy voices may not be reproducible")
        logger.debug("espeak-ng loaded from %s (data %s, %d Hz)", self.library_path, self.data_path, self.sample_rate)

    def _declare_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        if hasattr(lib, "espeak_ng_SetRandSeed"):
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
            lib.espeak_ng_SetRandSeed.restype = None

    def _collect(self, samples, n_samples, _events) -> int:
        """Synthesis callback: copy each block of samples out of the library's buffer."""
        if n_samples > 0 and samples:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n_samples,)).copy())
        return 0  # 0 = keep going

    def synthesize(self, request: SynthRequest) -> np.ndarray:
        """Render ``request`` and return its int16 samples at :attr:`sample_rate` (22,050 Hz)."""
        text = request.text.strip()
        if not text:
            raise EspeakError(f"nothing to synthesise: empty text for voice {request.voice!r}")
        if self._lib.espeak_SetVoiceByName(request.voice.encode()) != _EE_OK:
            raise EspeakError(
                f"espeak-ng has no voice {request.voice!r} in {self.data_path}; "
                "use a language with a variant, e.g. en-us+f1 or en-us+m3"
            )
        prosody = request.prosody
        for parameter, value in (
            (_PARAM_RATE, prosody.rate), (_PARAM_VOLUME, prosody.volume), (_PARAM_PITCH, prosody.pitch),
            (_PARAM_RANGE, prosody.pitch_range), (_PARAM_WORDGAP, prosody.word_gap),
        ):
            if self._lib.espeak_SetParameter(parameter, value, 0) != _EE_OK:
                raise EspeakError(f"espeak-ng refused parameter {parameter} = {value} ({prosody})")
        if self._set_seed is not None:
            self._set_seed(request.seed)
        self._libc.srand(ctypes.c_uint(request.seed & 0xFFFFFFFF))
        self._chunks = []
        encoded = text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != _EE_OK:
            raise EspeakError(f"espeak_Synth failed (status {status}) for {text!r} with voice {request.voice!r}")
        if not self._chunks:
            raise EspeakError(f"espeak-ng produced no audio for {text!r} with voice {request.voice!r}")
        return np.concatenate(self._chunks).astype(np.int16)


_ENGINE: Espeak | None = None


def get_engine() -> Espeak:
    """The process' single :class:`Espeak` (loaded and initialised on first use)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return _ENGINE


def synthesize_batch(requests: Sequence[SynthRequest]) -> list[np.ndarray]:
    """Synthesise ``requests`` in order with this process' engine (int16 at 22,050 Hz each)."""
    engine = get_engine()
    return [engine.synthesize(request) for request in requests]


def synthesize_isolated(
    batches: Sequence[Sequence[SynthRequest]], jobs: int = 1
) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Synthesise each batch in its own new process; yield ``(batch_index, waves)`` as batches finish.

    Up to ``jobs`` batches run at once. Every batch starts from a freshly loaded library, so its
    audio depends only on its own requests (see the module docstring). Workers are forked from a
    "forkserver" process that imports this module but never loads the library: a fork costs
    milliseconds where spawning a fresh interpreter costs most of a second.
    """
    if jobs < 1:
        raise EspeakError(f"jobs must be at least 1, got {jobs}")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1)
    try:
        futures = {pool.submit(synthesize_batch, list(batch)): index for index, batch in enumerate(batches)}
        for future in as_completed(futures):
            try:
                waves = future.result()
            except BrokenProcessPool:
                raise EspeakError(
                    "an espeak-ng worker process died (out of memory or a crash in libespeak-ng)"
                ) from None
            yield futures[future], waves
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
