"""Tiny look-alike trees of RAVDESS, CREMA-D, Emo-DB, ESD and MSP-Podcast, with their traps, for tests.

The real corpora cannot be shipped. Each builder writes the release's layout with short generated
tones (soundfile), plants the corpus's known traps (odd names and codes, song/video files, odd rates,
stereo, extra wav header chunks, empty / NaN / truncated / all-zero files, misspelt label files,
encodings) and returns the ground truth computed from its own inputs, never by parsing the names,
so tests check the parser against facts typed independently of it.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

SECONDS = 0.1
_CACHE: dict[tuple, bytes] = {}


def write_wav(path: Path, kind: str = "ok", rate: int = 16000, channels: int = 1, seconds: float = SECONDS,
              amplitude: float = 0.3) -> Path:
    """Write a tone (or a trap) at ``path``; same-shaped ok files share one rendering (fast)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "corrupt":
        path.write_bytes(b"RIFF\x00\x00 not a wav at all")
        return path
    if kind == "zero_bytes":
        path.write_bytes(b"")
        return path
    key = (kind, rate, channels, seconds, amplitude)
    if key in _CACHE:
        path.write_bytes(_CACHE[key])
        return path
    frames = int(round(seconds * rate))
    t = np.arange(frames) / rate
    tone = amplitude * np.sin(2 * np.pi * 220 * t) + amplitude * 0.03 * np.random.default_rng(0).standard_normal(frames)
    data = np.stack([tone, 0.5 * tone], axis=1) if channels == 2 else tone
    if kind == "empty":
        data = np.zeros((0, channels)) if channels > 1 else np.zeros(0)
    if kind == "zeros":
        data = np.zeros_like(data)
    subtype = "PCM_16"
    if kind == "nan":
        data = data.astype(np.float32)
        data[len(data) // 2] = np.nan
        subtype = "FLOAT"
    soundfile.write(str(path), data.astype(np.float32), rate, subtype=subtype)
    if kind == "list_chunk":  # an extra LIST chunk between fmt and data, as some RAVDESS files have
        raw = path.read_bytes()
        data_at = raw.index(b"data")
        info = b"INFOISFT" + struct.pack("<I", 6) + b"Lavf\x00\x00"
        chunk = b"LIST" + struct.pack("<I", len(info)) + info
        raw = raw[:data_at] + chunk + raw[data_at:]
        raw = raw[:4] + struct.pack("<I", len(raw) - 8) + raw[8:]
        path.write_bytes(raw)
    if kind == "truncated":  # header intact, data cut: what an interrupted copy leaves
        raw = path.read_bytes()
        path.write_bytes(raw[: len(raw) - len(raw) // 3])
    _CACHE[key] = path.read_bytes()
    return path


@dataclass
class Tree:
    """A written look-alike: its root and what a correct preparation makes of it."""

    root: Path
    expected: dict[str, dict] = field(default_factory=dict)  # utt_id -> {spk, code, gender, sentence, ...}
    votes: dict[str, dict[str, int]] = field(default_factory=dict)  # utt_id -> rater votes by corpus code
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason fragment -> file names

    def skip(self, reason: str, path: Path) -> None:
        self.skipped.setdefault(reason, []).append(path.name)


# ------------------------------------------------------------------------------------- RAVDESS

RAVDESS_EMOTIONS = ("01", "02", "03", "04", "05", "06", "07", "08")


def ravdess_tree(root: Path, actors=(1, 2, 3, 4, 5, 6), per_emotion: int = 2, traps: bool = True) -> Tree:
    """``per_emotion`` takes per actor and emotion (statement alternating), at 48 kHz, plus traps."""
    tree = Tree(root)
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        for emotion in RAVDESS_EMOTIONS:
            for k in range(per_emotion):
                statement, rep = f"{k % 2 + 1:02d}", f"{k // 2 + 1:02d}"
                intensity = "01" if emotion == "01" else f"{(k // 2) % 2 + 1:02d}"
                stem = f"03-01-{emotion}-{intensity}-{statement}-{rep}-{actor:02d}"
                write_wav(folder / f"{stem}.wav", rate=48000)
                tree.expected[f"Actor_{actor:02d}-{stem}"] = {
                    "spk": f"Actor_{actor:02d}", "code": emotion, "gender": "m" if actor % 2 else "f",
                    "sentence": f"s{statement}"}
    if traps:
        a = root / f"Actor_{actors[0]:02d}"
        odd = {"03-01-03-02-01-02-01": ("list_chunk", 48000, 1), "03-01-04-02-02-02-01": ("ok", 48000, 2),
               "03-01-05-02-01-02-01": ("ok", 44100, 1)}
        for stem, (kind, rate, ch) in odd.items():  # extra header chunk, stereo, another rate: all kept
            write_wav(a / f"{stem}.wav", kind=kind, rate=rate, channels=ch)
            tree.expected[f"Actor_01-{stem}"] = {"spk": "Actor_01", "code": stem[6:8], "gender": "m",
                                                 "sentence": f"s{stem[12:14]}"}
        write_wav(a / "03-01-06-02-01-02-01.wav", rate=48000, amplitude=0.003)  # very quiet: kept, noted
        tree.expected["Actor_01-03-01-06-02-01-02-01"] = {"spk": "Actor_01", "code": "06", "gender": "m",
                                                          "sentence": "s01"}
        for stem, kind, reason in [("03-02-03-01-01-01-01", "ok", "song"), ("01-01-03-01-01-01-01", "ok", "video"),
                                   ("03-01-03-01-01-01-02", "ok", "actor field"),
                                   ("03-01-09-01-01-01-01", "ok", "unknown emotion"),
                                   ("03-01-07-02-02-02-01", "empty", "empty"), ("03-01-08-02-02-02-01", "nan", "NaN"),
                                   ("03-01-02-02-02-02-01", "truncated", "truncated"),
                                   ("03-01-02-02-01-02-01", "zeros", "all zeros"),
                                   ("03-01-07-02-01-02-01", "corrupt", "unreadable")]:
            tree.skip(reason, write_wav(a / f"{stem}.wav", kind=kind, rate=48000))
        (a / "._03-01-01-01-01-01-01.wav").write_bytes(b"\x00\x05\x16\x07Mac OS X")
        tree.skip("macOS", a / "._03-01-01-01-01-01-01.wav")
        (a / "notes.txt").write_text("take 3 was noisy")
        tree.skip("not a .wav", a / "notes.txt")
        (a / "kids_door.wav").write_bytes(_CACHE[("ok", 48000, 1, SECONDS, 0.3)])
        tree.skip("file name is not", a / "kids_door.wav")
    return tree


def ravdess_full(root: Path) -> Path:
    """All 24 actors x 60 speech files (8 kHz, 0.06 s: small but above the 0.05 s floor)."""
    for actor in range(1, 25):
        for emotion in RAVDESS_EMOTIONS:
            for intensity in ("01",) if emotion == "01" else ("01", "02"):
                for statement in ("01", "02"):
                    for rep in ("01", "02"):
                        stem = f"03-01-{emotion}-{intensity}-{statement}-{rep}-{actor:02d}"
                        write_wav(root / f"Actor_{actor:02d}" / f"{stem}.wav", rate=8000, seconds=0.06)
    return root


# ------------------------------------------------------------------------------------- CREMA-D

CREMA_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMA_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")


def _demographics(root: Path, actors) -> None:
    lines = ["ActorID,Age,Sex,Race,Ethnicity"]
    lines += [f"{a},{30 + a % 20},{'Male' if a % 2 else 'Female'},Caucasian,Not Hispanic" for a in actors]
    root.mkdir(parents=True, exist_ok=True)
    (root / "VideoDemographics.csv").write_text("\n".join(lines) + "\n")


CREMA_VOTE_HEADER = ('"","A","D","F","H","N","S","fileName","numResponses","agreement","emoVote","meanEmoResp",'
                     '"meanAngerResp","meanDisgustResp","meanFearResp","meanHappyResp","meanNeutralResp","meanSadResp"')


def crema_rater_plan(n: int, emotion: str) -> dict[str, int]:
    """Clip ``n``'s voice-only votes: its own emotion 2-4 times, the next emotion once for odd clips."""
    votes = {emotion: 2 + n % 3}
    if n % 2:
        neighbour = CREMA_EMOTIONS[(CREMA_EMOTIONS.index(emotion) + 1) % 6]
        votes[neighbour] = 1
    return votes


def write_crema_raters(path: Path, plan: list[tuple[str, dict[str, int]]]) -> None:
    """``processedResults/tabulatedVotes.csv`` as the release has it: one row per clip and query type,
    id = 100000 * query type + clip number; the face-only and audio-visual rows (query types 2 and 3)
    vote otherwise and must not count; a practice clip and a row with an NA count are planted too."""
    def row(query: int, clip: int, stem: str, votes: dict[str, int]) -> str:
        counts = [votes.get(code, 0) for code in CREMA_EMOTIONS]
        return f'"{query * 100000 + clip}",{",".join(map(str, counts))},"{stem}",{sum(counts)},0.5,"N",50' + ",-1" * 6
    rows = [CREMA_VOTE_HEADER]
    for query, votes_of in ((1, None), (2, {"NEU": 5}), (3, {"HAP": 1, "SAD": 4})):
        rows += [row(query, clip, stem, votes_of or votes) for clip, (stem, votes) in enumerate(plan, start=1)]
    rows += [row(1, len(plan) + 1, "ANG_HI_practice", {"ANG": 9}),
             f'"{100000 + len(plan) + 2}",NA,0,0,0,0,0,"{plan[0][0]}",0,0,"N",50' + ",-1" * 6]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def crema_tree(root: Path, actors=(1001, 1002, 1003, 1004, 1076), per_emotion: int = 2, traps: bool = True,
               raters: bool = True) -> Tree:
    """``raters``: write processedResults/tabulatedVotes.csv (the voice-only votes planted in ``votes``)."""
    tree = Tree(root)
    rater_plan = []
    audio = root / "AudioWAV"
    _demographics(root, actors)
    for actor in actors:
        for e, emotion in enumerate(CREMA_EMOTIONS):
            for k in range(per_emotion):
                sentence = CREMA_SENTENCES[(e + 2 * k) % 12]
                if (actor, sentence, emotion) == (1076, "MTI", "SAD"):
                    sentence = "TIE"
                stem = f"{actor}_{sentence}_{emotion}_XX"
                write_wav(audio / f"{stem}.wav")
                tree.expected[f"{actor}-{stem}"] = {"spk": str(actor), "code": emotion,
                                                    "gender": "m" if actor % 2 else "f", "sentence": sentence}
                rater_plan.append((stem, crema_rater_plan(len(rater_plan), emotion)))
                tree.votes[f"{actor}-{stem}"] = rater_plan[-1][1]
    if traps:
        write_wav(audio / "1076_MTI_SAD_XX.wav", kind="zero_bytes")  # the release's known empty clip
        tree.skip("known empty clip", audio / "1076_MTI_SAD_XX.wav")
        for stem, kind, reason in [("1001_IEO_ANG_XY", "ok", "intensity"), ("1001_XXX_ANG_XX", "ok", "sentence code"),
                                   ("1002_IEO_SUR_HI", "ok", "emotion code"), ("0999_IEO_ANG_HI", "ok", "actor id"),
                                   ("1003_IEO_HAP_HI", "empty", "empty"), ("1004_IEO_HAP_HI", "truncated", "truncated")]:
            tree.skip(reason, write_wav(audio / f"{stem}.wav", kind=kind))
        write_wav(audio / "1002_IEO_NEU_LO.wav", rate=8000)  # another rate: kept, noted; no rater row
        tree.expected["1002-1002_IEO_NEU_LO"] = {"spk": "1002", "code": "NEU", "gender": "f", "sentence": "IEO"}
        tree.votes["1002-1002_IEO_NEU_LO"] = {}
    if raters:
        write_crema_raters(root / "processedResults" / "tabulatedVotes.csv", rater_plan)
    return tree


CREMA_FULL_COUNTS = {"ANG": 1271, "DIS": 1271, "FEA": 1271, "HAP": 1271, "NEU": 1087, "SAD": 1271}


def crema_full(root: Path) -> Path:
    """7442 files over 91 actors with the release's per-emotion counts and its empty clip."""
    audio = root / "AudioWAV"
    _demographics(root, [a for a in range(1001, 1092)])
    # 48 male / 43 female as in the release: odd ids are male in _demographics (46 odd ids), so fix two
    rows = (root / "VideoDemographics.csv").read_text().splitlines()
    rows = [r.replace("Female", "Male") if r.startswith(("1002,", "1004,")) else r for r in rows]
    (root / "VideoDemographics.csv").write_text("\n".join(rows) + "\n")
    levels = ("XX", "LO", "MD", "HI")
    for emotion, count in CREMA_FULL_COUNTS.items():
        names = [(1001 + i % 91, CREMA_SENTENCES[(i // 91) % 12], levels[(i // (91 * 12)) % 4]) for i in range(count)]
        for actor, sentence, level in names:
            stem = f"{actor}_{sentence}_{emotion}_{level}"
            if stem == "1076_MTI_SAD_XX":
                write_wav(audio / f"{stem}.wav", kind="zero_bytes")
            else:
                write_wav(audio / f"{stem}.wav", rate=8000, seconds=0.06)
    return root


# -------------------------------------------------------------------------------------- Emo-DB

EMODB_SPEAKERS = {"03": "m", "08": "f", "09": "f", "10": "m", "11": "m", "12": "m", "13": "f", "14": "f",
                  "15": "m", "16": "f"}
EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EMODB_EMOTIONS = ("W", "L", "E", "A", "F", "T", "N")
EMODB_FULL_COUNTS = {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "T": 62, "N": 79}
#: A lablaut file as the release writes it: xlabel header, '#', then time, colour, SAMPA label.
LABLAUT_PHONES = [".", "d", "E:6", "l", "'a", "p", "@", "n", "l", "i:", "k", "t", "aU", "f", "d", "e:", "m",
                  "'aI", "s", "S", "r", "a", "N", "k", "."]


def write_lablaut(path: Path, phones=LABLAUT_PHONES) -> None:
    header = ["signal 03a01Fa", "type 0", "color 121", "font -misc-*-bold-*-*-*-15-*-*-*-*-*-*-*",
              "separator ;", "nfields 1", "#"]
    body = [f"    {0.05 * (n + 1):.6f} 121 {phone}" for n, phone in enumerate(phones)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(header + body) + "\n").encode("latin-1"))


def emodb_tree(root: Path, speakers=("03", "08", "10", "13"), folder: str = "wav", traps: bool = True) -> Tree:
    tree = Tree(root)
    for s, speaker in enumerate(speakers):
        for e, emotion in enumerate(EMODB_EMOTIONS):
            for k in range(2):
                text = EMODB_TEXTS[(e + k + s) % 10]
                stem = f"{speaker}{text}{emotion}{'ab'[k]}"
                write_wav(root / folder / f"{stem}.wav")
                write_lablaut(root / "lablaut" / f"{stem}xx.lablaut")
                tree.expected[f"{speaker}-{stem}"] = {"spk": speaker, "code": emotion,
                                                      "gender": EMODB_SPEAKERS[speaker], "sentence": text}
    if traps:
        write_lablaut(root / "lablaut" / f"{speakers[0]}a01Wa.lablaut", phones=["x"])  # a twin of the xx file
        (root / "lablaut" / f"{speakers[0]}a02Wbxx.lablaut").unlink()  # no label file: empty utt2sampa
        for stem, reason in [("04a01Wa", "speaker code"), ("03c01Wa", "file name"), ("03a03Wa", "text code"),
                             ("03a01Xa", "emotion code")]:
            tree.skip(reason, write_wav(root / folder / f"{stem}.wav"))
        tree.skip("NaN", write_wav(root / folder / f"{speakers[1]}a02Nz.wav", kind="nan"))
        (root / "erkennung.txt").write_text("recognition rates\n")
    return tree


def emodb_full(root: Path) -> Path:
    """535 files with the release's per-emotion counts over the 10 speakers (no label files)."""
    speakers = list(EMODB_SPEAKERS)
    n = 0
    for emotion, count in EMODB_FULL_COUNTS.items():
        for i in range(count):
            speaker, text = speakers[i % 10], EMODB_TEXTS[(i // 10) % 10]
            write_wav(root / "wav" / f"{speaker}{text}{emotion}{'abcdefghij'[i // 100]}.wav", rate=8000, seconds=0.06)
            n += 1
    return root


# ----------------------------------------------------------------------------------------- ESD

ESD_EMOTIONS = ("Neutral", "Angry", "Happy", "Sad", "Surprise")
ESD_TEXTS = ["Author of the danger trail, Philip Steels, etc.", "Café au lait, s'il vous plaît.",
             "The nine the eggs, I keep."]
ESD_ZH_TEXTS = ["打远一看，它们的确很是美丽。", "今天天气很好！", "我们走吧"]
ESD_GENDER = {"0011": "m", "0015": "f", "0012": "m"}


def esd_tree(root: Path, speakers=("0011", "0015"), encodings=("utf-8", "utf-16"), splits: bool = True,
             per_emotion: int = 3, mandarin: str | None = "0001") -> Tree:
    """English speakers (each txt in its own encoding) with split folders; one Mandarin speaker."""
    tree = Tree(root)
    names = ("train", "evaluation", "test")
    for speaker, encoding in zip(speakers, encodings):
        lines = []
        for e, emotion in enumerate(ESD_EMOTIONS):
            for k in range(per_emotion):
                stem = f"{speaker}_{350 * e + k + 1:06d}"
                sub = Path(emotion) / names[k % 3] if splits else Path(emotion)
                write_wav(root / speaker / sub / f"{stem}.wav")
                text = ESD_TEXTS[k % 3]
                lines.append(f"{stem}\t{text}\t{emotion}")
                tree.expected[f"{speaker}-{stem}"] = {"spk": speaker, "code": emotion, "gender": ESD_GENDER[speaker],
                                                      "text": text, "split": names[k % 3] if splits else None}
        lines.append(f"{speaker}_001751\tA line whose wav is not in the copy.\tNeutral")
        lines.append("garbage without an id")
        (root / speaker / f"{speaker}.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    first = root / speakers[0]
    tree.skip("not <speaker>_<6 digits>", write_wav(first / "Angry" / ("train" if splits else ".") / "9999_000001.wav"))
    (first / "Excited").mkdir()
    tree.skip("not an ESD emotion", first / "Excited")
    (first / "readme.txt").write_text("ESD")
    tree.skip("unexpected file", first / "readme.txt")
    if mandarin:
        lines = []
        for e, emotion in enumerate(ESD_EMOTIONS):
            stem = f"{mandarin}_{350 * e + 1:06d}"
            write_wav(root / mandarin / emotion / "train" / f"{stem}.wav")
            lines.append(f"{stem}\t{ESD_ZH_TEXTS[e % 3]}\t中立")
        (root / mandarin / f"{mandarin}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tree


# -------------------------------------------------------------------------------- MSP-Podcast

MSP_HEADER = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
MSP_WORDS = {"A": "Angry", "H": "Happy", "S": "Sad", "N": "Neutral", "F": "Fear", "D": "Disgust", "U": "Surprise",
             "C": "Contempt", "O": "Other-Concerned"}


def msp_rater_plan(n: int, code: str) -> list[str]:
    """The codes file ``n`` of the plan gets from its annotators: its own several times, a neighbour's,
    sometimes Other; file 3 has no annotator rows at all."""
    codes = tuple("AHSNFDUC")
    if n == 3:
        return []
    own = [code] * (2 + n % 3) if code in codes else ["H", "S"]
    return own + [codes[(n + 1) % 8]] * (n % 2) + ["O"] * (n % 4 == 0)


def write_msp_raters(path: Path, plan: list[tuple[str, list[str]]], layout: str) -> None:
    """``labels_detailed.csv`` in the release's ``EmoDetail`` layout (1.7 on) or the ``EmoClass_Major`` one,
    one row per annotator, plus a malformed row and an unknown word that must not count."""
    worker = iter(range(1000, 100000))
    if layout == "emodetail":
        rows = ["FileName,EmoDetail"]
        rows += [f'{name},"WORKER{next(worker):08d}; {MSP_WORDS[c]}; Concerned,Amused; A:3.0; V:4.0; D:4.5;"'
                 for name, codes in plan for c in codes]
        rows += [f"{plan[0][0]},garbage", f'{plan[1][0]},"WORKER00000001; Bored; ; A:3.0; V:4.0; D:4.0;"']
    else:
        rows = ["FileName,Worker,EmoClass_Major,EmoClass_Second,EmoAct,EmoVal,EmoDom"]
        rows += [f"{name},WORKER{next(worker):08d},{MSP_WORDS[c]},Concerned,3.0,4.0,4.5" for name, codes in plan
                 for c in codes]
        rows += [f"{plan[0][0]},WORKER00000001,,,3,4,4", f"{plan[1][0]},WORKER00000002,Bored,,3,4,4"]
    path.write_text("\n".join(rows) + "\n")


def msp_tree(root: Path, old_release: bool = False, missing: int = 0, raters: str | None = "emodetail") -> Tree:
    """Labels for 32 files (every class in each split; speakers 100-101 train, 102 development, 103 test),
    with O/X rows, an Unknown speaker, a hidden label,
    a stereo 44.1 kHz outlier; ``old_release`` uses labels_concensus.csv and 'Validation';
    ``missing`` labelled files are left out of Audios/; ``raters`` is the layout of labels_detailed.csv
    (``emodetail``, ``major``; None: no such file)."""
    tree = Tree(root)
    dev = "Validation" if old_release else "Development"
    rows, parts = [], []
    plan = []
    codes = "AHSNFDUC"
    for i in range(32):
        speaker = str(100 + i // 8)
        split = ("Train", "Train", dev, "Test1")[i // 8]
        plan.append((f"MSP-PODCAST_{i + 1:04d}_0001.wav", codes[i % 8], speaker, "Male" if i % 2 else "Female", split))
    plan += [("MSP-PODCAST_0100_0001.wav", "O", "100", "Male", "Train"),
             ("MSP-PODCAST_0101_0001.wav", "X", "101", "Female", "Train"),
             ("MSP-PODCAST_0102_0001.wav", "", "102", "Male", "Test3"),
             ("MSP-PODCAST_0103_0001.wav", "A", "Unknown", "Unknown", "Train")]
    for n, (name, code, speaker, gender, split) in enumerate(plan):
        rows.append(f"{name},{code},3.2,4.0,3.8,{speaker},{gender},{split}")
        parts.append(f"{split}; {name}")
        if n < len(plan) - missing:
            stereo = n == 5
            write_wav(root / "Audios" / name, rate=44100 if stereo else 16000, channels=2 if stereo else 1)
        stem = Path(name).stem
        (root / "Transcripts").mkdir(parents=True, exist_ok=True)
        (root / "Transcripts" / f"{stem}.txt").write_text("well I think it was fine\n")
        if code and code not in "OX" and n < len(plan) - missing:
            spk = "unknown" if speaker == "Unknown" else speaker
            tree.expected[f"{spk}-{stem}"] = {"spk": spk, "code": code, "split": split,
                                              "gender": {"Male": "m", "Female": "f"}.get(gender)}
            tree.votes[f"{spk}-{stem}"] = Counter(msp_rater_plan(n, code))
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    label_name = "labels_concensus.csv" if old_release else "labels_consensus.csv"
    (root / "Labels" / label_name).write_text("\n".join([MSP_HEADER, *rows]) + "\n")
    if raters:
        rater_plan = [(name, msp_rater_plan(n, code)) for n, (name, code, *_) in enumerate(plan)]
        write_msp_raters(root / "Labels" / "labels_detailed.csv", rater_plan, raters)
    (root / "Partitions.txt").write_text("\n".join(parts) + "\n")
    write_wav(root / "Audios" / "MSP-PODCAST_9999_0001.wav")  # audio without a label row
    return tree
