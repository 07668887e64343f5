"""Build small IEMOCAP-layout look-alike trees in a temporary folder, for tests.

The real corpus cannot be shipped, so tests write trees with the same layout and the same traps
(evaluator lines, EmoEvaluation sub-folders, macOS ``._*`` files, odd transcript lines, XX turns,
suffixed dialogs, CRLF line ends, labels outside the classes, missing / corrupt / 8 kHz / stereo
wavs), with tiny real wav files. Each utterance is described by :class:`TreeUtt`, whose expected
speaker, gender and ids are computed from its own fields — never by parsing the id — so tests
know the ground truth independently of the parser under test.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

#: A consensus line for this id is planted in every trap file that must NOT be read; its wav
#: exists, so a parser that took those files for label files could put it in the data directory.
GHOST_TURN = "F999"


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

    def labelled(self) -> list[TreeUtt]:
        return [u for u in self.utts if u.code is not None]

    def expected(self, mapping: dict[str, str]) -> dict[str, TreeUtt]:
        """``{utt_id: utt}`` that a correct preparation keeps under a class map's ``map``."""
        return {u.utt_id: u for u in self.labelled() if u.code in mapping and u.wav == "ok"}


def _write_text(path: Path, lines: list[str], crlf: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = "\r\n" if crlf else "\n"
    path.write_bytes(ending.join(lines).encode("utf-8") + ending.encode())


def _write_wav(path: Path, utt: TreeUtt, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if utt.wav == "corrupt":
        path.write_bytes(b"RIFF\x00\x00 this is not a wav file")
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


def _plant_traps(session_dir: Path, dialog: str, counts: dict[str, int]) -> None:
    """Files a correct parser must skip: each holds a consensus line for a ghost utterance."""
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
    counts["._"] = counts.get("._", 0) + 1  # only the EmoEvaluation twin is in a folder the parser lists
    ghost_wav = session_dir / "sentences" / "wav" / dialog / f"{ghost}.wav"
    _write_wav(ghost_wav, TreeUtt(1, "F", "x", "F", 999, "ang"), seed=999)


def write_iemocap_tree(root: Path, utts: list[TreeUtt], styles: dict[str, DialogStyle] | None = None,
                       traps: bool = True) -> IemocapTree:
    """Write an IEMOCAP-layout tree under ``root`` holding ``utts``; return it with its ground truth."""
    styles = styles or {}
    counts: dict[str, int] = {}
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
                _write_wav(session_dir / "sentences" / "wav" / dialog / f"{u.corpus_id}.wav", u, seed=n)
        if traps:
            _plant_traps(session_dir, dialog, counts)
    if traps:
        (root / "._Session1").write_bytes(b"\x00\x05\x16\x07")
        counts["._"] = counts.get("._", 0) + 1
    return IemocapTree(root=root, utts=list(utts), n_trap_files=counts)


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
