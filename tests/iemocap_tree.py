"""Build small IEMOCAP-layout look-alike trees in a temporary folder, for tests.

The real corpus cannot be shipped, so tests write trees with the same layout and the same traps
(evaluator lines, EmoEvaluation sub-folders, macOS ``._*`` files, odd transcript lines, XX turns,
suffixed dialogs, CRLF line ends, labels outside the classes, missing / corrupt / 8 kHz / stereo /
too short wavs, stray files and unlabelled wavs in ``sentences/wav``), with tiny real wav files.
Each utterance is described by :class:`TreeUtt`, whose expected speaker, gender and ids are
computed from its own fields — never by parsing the id — so tests know the ground truth
independently of the parser under test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

#: A consensus line for this id is planted in every trap file that must NOT be read; its wav
#: exists, so a parser that took those files for label files could put it in the data directory.
GHOST_TURN = "F999"
#: Shortest wav a correct preparation keeps, in seconds (typed here independently of the module).
MIN_SECONDS = 0.05
#: A stray non-audio file planted in every sentence wav folder of a trap tree.
STRAY_FILE = ".DS_Store"


@dataclass(frozen=True)
class TreeUtt:
    """One utterance turn of a look-alike tree and what a correct parser must make of it."""

    session: int  # 1..5
    starter: str  # "F" or "M": the dialog's prefix letter (who started the dialog)
    name: str  # dialog name after the prefix: "impro01", "script01_1b", "impro05a"
    turn: str  # "F" or "M": who speaks THIS utterance
    index: int
    code: str | None  # consensus code, None: no label at all
    text: str | None = "Excuse me."  # None: no transcript line
    wav: str = "ok"  # "ok", "missing" or "corrupt"
    sample_rate: int = 16000
    channels: int = 1
    seconds: float = 0.3

    @property
    def dialog(self) -> str:
        return f"Ses{self.session:02d}{self.starter}_{self.name}"

    @property
    def corpus_id(self) -> str:
        return f"{self.dialog}_{self.turn}{self.index:03d}"

    @property
    def speaker(self) -> str:
        return f"Ses{self.session:02d}{self.turn}"

    @property
    def gender(self) -> str:
        return self.turn.lower()

    @property
    def utt_id(self) -> str:
        return f"{self.speaker}-{self.corpus_id}"

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.sample_rate))

    @property
    def duration(self) -> str:
        """The utt2dur value a correct preparation writes."""
        return f"{self.frames / self.sample_rate:.3f}"

    @property
    def usable(self) -> bool:
        """Whether the wav exists, reads, and holds at least MIN_SECONDS of audio."""
        return self.wav == "ok" and self.frames > 0 and self.frames / self.sample_rate >= MIN_SECONDS

    def wav_path(self, root: Path) -> Path:
        return root / f"Session{self.session}" / "sentences" / "wav" / self.dialog / f"{self.corpus_id}.wav"


@dataclass(frozen=True)
class DialogStyle:
    """How a dialog's text files are written (the whitespace / line-end traps)."""

    crlf: bool = False
    spaces: bool = False  # spaces instead of tabs in EmoEvaluation lines


@dataclass
class IemocapTree:
    root: Path
    utts: list[TreeUtt]
    n_trap_files: dict[str, int] = field(default_factory=dict)
    ghost_wavs: list[Path] = field(default_factory=list)  # planted wavs that no label file names
    stray_files: list[Path] = field(default_factory=list)  # planted non-wav files in sentence wav folders

    def labelled(self) -> list[TreeUtt]:
        return [u for u in self.utts if u.code is not None]

    def expected(self, mapping: dict[str, str]) -> dict[str, TreeUtt]:
        """``{utt_id: utt}`` that a correct preparation keeps under a class map's ``map``."""
        return {u.utt_id: u for u in self.labelled() if u.code in mapping and u.usable}

    def unlabelled_wavs(self) -> list[Path]:
        """Sentence wavs that no consensus line names (unlabelled turns and planted ghosts), sorted."""
        paths = [u.wav_path(self.root) for u in self.utts if u.code is None and u.wav != "missing"]
        return sorted(paths + self.ghost_wavs)


def _write_text(path: Path, lines: list[str], crlf: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = "\r\n" if crlf else "\n"
    path.write_bytes(ending.join(lines).encode("utf-8") + ending.encode())


def _write_wav(path: Path, utt: TreeUtt, seed: int, cache: dict | None = None) -> None:
    """Write ``utt``'s wav; with ``cache``, wavs of the same shape share one rendering (fast)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if utt.wav == "corrupt":
        path.write_bytes(b"RIFF\x00\x00 this is not a wav file")
        return
    if cache is not None:
        key = (utt.frames, utt.sample_rate, utt.channels)
        if key not in cache:
            _write_wav(path, utt, seed)
            cache[key] = path.read_bytes()
        else:
            path.write_bytes(cache[key])
        return
    rng = np.random.default_rng(seed)
    t = np.arange(utt.frames) / utt.sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(utt.frames)
    data = np.stack([tone] * utt.channels, axis=1) if utt.channels > 1 else tone
    soundfile.write(str(path), data.astype(np.float32), utt.sample_rate, subtype="PCM_16")


def _consensus_line(start: float, end: float, utt: str, code: str, sep: str) -> str:
    return f"[{start:.4f} - {end:.4f}]{sep}{utt}{sep}{code}{sep}[2.5000, 3.0000, 2.5000]"


def _emo_evaluation(dialog: str, utts: list[TreeUtt], times: dict[str, tuple[float, float]],
                    style: DialogStyle) -> list[str]:
    sep = "  " if style.spaces else "\t"
    lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
    for u in utts:
        start, end = times[u.corpus_id]
        lines += [
            _consensus_line(start, end, u.corpus_id, u.code, sep),
            f"C-E2:{sep}Neutral;{sep}()",
            f"C-E3:{sep}Anger; Frustration;{sep}(annoyed)",
            f"C-{u.turn}1:{sep}Neutral; Anger;{sep}(curious)",
            f"A-E3:{sep}val 3; act 2; dom  2;{sep}()",
            f"A-{u.turn}1:{sep}val 2; act 3; dom  3;{sep}()",
            "",
        ]
    return lines


def _transcription(dialog: str, utts: list[TreeUtt], times: dict[str, tuple[float, float]]) -> list[str]:
    lines = []
    for n, u in enumerate(utts):
        start, end = times[u.corpus_id]
        if u.text is not None:
            lines.append(f"{u.corpus_id} [{start:08.4f}-{end:08.4f}]: {u.text}")
        if n == 0:  # the corpus' odd lines: an XX turn and a line with no id or time
            lines.append(f"{dialog}_MXX0 [{end:08.4f}-{end + 0.5:08.4f}]: [LAUGHTER] Yeah, right.")
            lines.append("M: Yeah.")
    return lines


def _plant_traps(session_dir: Path, dialog: str, counts: dict[str, int], tree: IemocapTree) -> None:
    """Files a correct parser must skip: each holds a consensus line for a ghost utterance, whose wav
    exists; plus macOS twins and a stray file in ``sentences/wav``."""
    ghost = f"{dialog}_{GHOST_TURN}"
    ghost_line = _consensus_line(1.0, 2.0, ghost, "ang", "\t")
    emo_dir = session_dir / "dialog" / "EmoEvaluation"
    for sub in ("Categorical", "Attribute", "Self-evaluation"):
        if not (emo_dir / sub).exists():
            counts["sub-folder"] = counts.get("sub-folder", 0) + 1
        _write_text(emo_dir / sub / f"{dialog}_e1_cat.txt", [ghost_line], crlf=False)
    # AppleDouble twin: binary header, then text that would parse as a label.
    apple_double = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X\xff\xfe\n"
    (emo_dir / f"._{dialog}.txt").write_bytes(apple_double + ghost_line.encode())
    (session_dir / "dialog" / "transcriptions" / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07junk")
    counts["._"] = counts.get("._", 0) + 1  # the EmoEvaluation twin: the transcription folder is not listed
    wav_dir = session_dir / "sentences" / "wav" / dialog
    ghost_wav = wav_dir / f"{ghost}.wav"
    _write_wav(ghost_wav, TreeUtt(1, "F", "x", "F", 999, "ang"), seed=999)
    tree.ghost_wavs.append(ghost_wav)
    # twins of the dialog folder and of a wav, as a copy from a Mac leaves them; a Finder file
    (wav_dir.parent / f"._{dialog}").write_bytes(apple_double)
    (wav_dir / f"._{ghost}.wav").write_bytes(apple_double)
    counts["._"] += 2
    (wav_dir / STRAY_FILE).write_bytes(b"\x00\x00\x00\x01Bud1")
    tree.stray_files.append(wav_dir / STRAY_FILE)


def write_iemocap_tree(root: Path, utts: list[TreeUtt], styles: dict[str, DialogStyle] | None = None,
                       traps: bool = True, reuse_audio: bool = False) -> IemocapTree:
    """Write an IEMOCAP-layout tree under ``root`` holding ``utts``; return it with its ground truth.

    ``reuse_audio``: utterances of the same length share one rendering (for trees of thousands).
    """
    styles = styles or {}
    audio_cache: dict | None = {} if reuse_audio else None
    tree = IemocapTree(root=root, utts=list(utts))
    counts = tree.n_trap_files
    dialogs: dict[str, list[TreeUtt]] = {}
    for u in utts:
        dialogs.setdefault(u.dialog, []).append(u)
    for dialog, members in dialogs.items():
        session_dir = root / f"Session{members[0].session}"
        style = styles.get(dialog, DialogStyle())
        times, clock = {}, 1.0
        for u in members:
            times[u.corpus_id] = (clock, clock + u.seconds)
            clock += u.seconds + 0.7
        labelled = [u for u in members if u.code is not None]
        _write_text(session_dir / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
                    _emo_evaluation(dialog, labelled, times, style), style.crlf)
        _write_text(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt",
                    _transcription(dialog, members, times), style.crlf)
        for n, u in enumerate(members):
            if u.wav != "missing":
                _write_wav(session_dir / "sentences" / "wav" / dialog / f"{u.corpus_id}.wav", u, seed=n,
                           cache=audio_cache)
        if traps:
            _plant_traps(session_dir, dialog, counts, tree)
    if traps:
        (root / "._Session1").write_bytes(b"\x00\x05\x16\x07")
        counts["._"] = counts.get("._", 0) + 1
    return tree


def trap_utts() -> list[TreeUtt]:
    """A partial corpus (sessions 1, 3, 5) with every trap; see the comments for what each tests."""
    U = TreeUtt
    return [
        # a plain improvisation, both actors, all kinds of codes
        U(1, "F", "impro01", "F", 0, "neu"),
        U(1, "F", "impro01", "M", 0, "ang", text="[BREATHING] Get out. [LAUGHTER]"),
        U(1, "F", "impro01", "F", 1, "exc", text="Oh wow!"),
        U(1, "F", "impro01", "M", 1, "xxx"),
        U(1, "F", "impro01", "F", 2, "hap", text=None),  # labelled, no transcript line
        U(1, "F", "impro01", "M", 2, "fru"),
        U(1, "F", "impro01", "F", 3, "sad", wav="missing"),
        U(1, "F", "impro01", "M", 3, None),  # a turn with a transcript but no label
        # a script dialog written with CRLF line ends, started by the male actor
        U(1, "M", "script01_1", "M", 0, "sad", text="I [GARBAGE] know."),
        U(1, "M", "script01_1", "F", 0, "ang", seconds=0.45),
        U(1, "M", "script01_1", "M", 1, "neu"),
        U(1, "M", "script01_1", "F", 1, "sur"),
        # suffixed dialogs: a fixed character index gets these speakers wrong
        U(3, "M", "impro05a", "F", 0, "ang"),
        U(3, "M", "impro05a", "M", 0, "hap"),
        U(3, "M", "impro05a", "F", 1, "exc", seconds=0.2),
        U(3, "M", "impro08b", "M", 0, "neu"),
        U(3, "M", "impro08b", "F", 0, "sad", sample_rate=8000),  # not 16 kHz: kept, noted
        U(3, "M", "impro08b", "M", 1, "ang", seconds=0.03),  # too short for wav2vec 2.0: skipped, reported
        U(3, "M", "impro08b", "F", 1, "xxx", seconds=0.02),  # too short, but excluded by its code first
        U(5, "M", "script01_1b", "F", 0, "neu"),
        U(5, "M", "script01_1b", "M", 0, "exc", channels=2),  # stereo: kept, noted
        U(5, "M", "script01_1b", "F", 1, "fea"),
        U(5, "M", "script01_1b", "M", 1, "dis"),
        U(5, "M", "script01_1b", "F", 2, "oth"),
        U(5, "M", "script01_1b", "M", 2, "ang", wav="corrupt"),
    ]


TRAP_STYLES = {
    "Ses01M_script01_1": DialogStyle(crlf=True),
    "Ses03M_impro05a": DialogStyle(spaces=True),
    "Ses05M_script01_1b": DialogStyle(crlf=True, spaces=True),
}


def build_trap_tree(root: Path) -> IemocapTree:
    """The standard look-alike tree most tests use (partial: sessions 1, 3 and 5)."""
    return write_iemocap_tree(root, trap_utts(), TRAP_STYLES)


#: Published full-release counts (corpora.md), typed here independently of the module under test.
PUBLISHED_CODES = {"xxx": 2507, "fru": 1849, "neu": 1708, "ang": 1103, "sad": 1084, "exc": 1041,
                   "hap": 595, "sur": 107, "fea": 40, "oth": 3, "dis": 2}
PUBLISHED_4CLASS_SESSIONS = {1: 1085, 2: 1023, 3: 1151, 4: 1031, 5: 1241}
FULL_RELEASE_DIALOGS_PER_SESSION = {1: 30, 2: 30, 3: 30, 4: 30, 5: 31}  # 151 in all (the split is made up)


def published_count_utts() -> list[TreeUtt]:
    """10,039 labelled utterances over 5 sessions and 151 dialogs with exactly the published consensus-code
    and 4-class per-session counts: the shape of an intact full release.

    Only the 5,531 four-class utterances get a wav (the others are excluded before any wav is read),
    each 0.05 s long, which keeps the tree small enough to write in a few seconds.
    """
    four = [code for code in ("ang", "hap", "exc", "sad", "neu") for _ in range(PUBLISHED_CODES[code])]
    others = [code for code in ("xxx", "fru", "sur", "fea", "oth", "dis") for _ in range(PUBLISHED_CODES[code])]
    per_session: dict[int, list[str]] = {}
    start = 0
    for session, count in PUBLISHED_4CLASS_SESSIONS.items():
        per_session[session] = four[start:start + count]
        start += count
    for k, code in enumerate(others):
        per_session[1 + k % 5].append(code)
    four_classes = {"ang", "hap", "exc", "sad", "neu"}
    utts = []
    for session, codes in per_session.items():
        n_dialogs = FULL_RELEASE_DIALOGS_PER_SESSION[session]
        for k, code in enumerate(codes):
            dialog = k % n_dialogs
            utts.append(TreeUtt(session, "FM"[dialog % 2], f"impro{dialog:02d}", "FM"[k % 2], k, code,
                                seconds=MIN_SECONDS, wav="ok" if code in four_classes else "missing"))
    return utts
