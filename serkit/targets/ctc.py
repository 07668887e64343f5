"""The CTC target: a token sequence per utterance, learnt by a CTC head over the network's frames.

Li et al. (2024) add ``mtl_lambda * L_PR``, a CTC loss over emotion-phoneme tokens (``utt2phn``:
six phone classes, each suffixed with the utterance's emotion index, e.g. ``VS3``); Cai et al.
(2021) use the transcript's characters instead. ``ctc_targets`` chooses the tokens (``emophone``,
``char`` or ``bpe``), stage 1 makes them (:func:`make_tokens`) with their inventory
``<lang_dir>/tokens.txt`` (blank at index 0; :func:`lang_dir_of` names the directory of each kind), and
``mtl_lambda`` weights the loss part ``PR`` (0: no head, no tokens read).

Decoded per utterance: the reference and greedy-decoded tokens (``ref_tokens``/``hyp_tokens`` in
``test_predictions.tsv``). Served: every export folder holds the inventory as ``tokens.txt`` (empty
for a model without the head), and inference gives the greedy-decoded tokens (``Prediction.outputs["ctc"]``,
also ``Prediction.emotion_phonemes``; ``serkit-infer --phonemes``). A recording scored in windows takes
each frame from the window that owns its time: from the middle of the window's overlap with the
previous one to the middle of its overlap with the next.

Scored: the token error rate (PER: edit distance over reference length) for any tokens, and for
emotion-phonemes also the *suffix accuracy*: the emotion read off the decoded tokens' digit suffixes
by majority vote.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch

from serkit.data import inventory
from serkit.labels import ctc_targets, emophone
from serkit.scoring import metrics
from serkit.data.datadir import DataDirError
from serkit.targets.base import Target, TargetError, read_values

# The data-dir file holding each choice of tokens (stage 1 writes it, and tokens.txt in the lang dir).
FILES = ctc_targets.TARGET_FILES
COLUMNS = ("ref_tokens", "hyp_tokens")
TOKENS_FILE = "tokens.txt"  # the token inventory's name, in a lang dir and in an export folder
# An emotion-phoneme token: a phone-class name followed by the emotion index, e.g. "VS3".
_SUFFIXED_TOKEN = re.compile(r"(\D+)(\d+)")


class CTCTarget(Target):
    name = "ctc"
    part = "PR"
    weight_option = "mtl_lambda"
    sequences = ("tokens",)
    # The tokens of each choice, and the phones the emotion-phonemes are made from (stage 1 writes them too).
    stage1_files = ctc_targets.STAGE1_FILES
    stage1_title = "CTC targets"
    stage1_skipped = "no experiment trains a CTC head"
    fold_means = ("PER", "suffix_acc")
    results_columns = (("PER", "PER"), ("suffix acc", "suffix_acc"))
    results_counts = (("no tok", "n_no_tokens"),)
    results_explanation = (
        "PER = token error rate of the CTC head (edit distance / reference tokens); "
        "suffix acc = emotion read as the majority digit suffix of the decoded emotion-phoneme tokens "
        "(an utterance with no decoded token counts as wrong; *no tok* counts them).")
    model_facts = ("n_tokens", "ctc_targets")
    export_files = (TOKENS_FILE,)
    show_option = ("--phonemes", "also print the decoded emotion-phoneme string")
    prediction_alias = "emotion_phonemes"

    def __init__(self, hparams: dict):
        super().__init__(hparams)
        self.kind = str(hparams.get("ctc_targets", "emophone"))
        if self.kind not in FILES:
            raise TargetError(f"ctc_targets must be one of {', '.join(FILES)}, got {self.kind!r}")
        self.tokens: list[str] = []

    def check_family(self, family) -> None:
        """The family offers the head (its frame outputs) by listing ``mtl_lambda`` among its options."""
        if self.active and self.weight_option not in family.options:
            raise TargetError(f"family {family.name} has no CTC head option; set mtl_lambda to 0")

    def files(self) -> tuple[str, ...]:
        return (FILES[self.kind],)

    @classmethod
    def stage1_need(cls, settings: dict) -> str | None:
        """The kind of tokens a config trains a CTC head on (``ctc_targets``), None without the head."""
        if float(settings.get(cls.weight_option) or 0) <= 0:
            return None
        return cls(settings).kind

    @classmethod
    def make_stage1(cls, need: str, data_dir: Path, lang: Path, options: dict[str, Any]) -> str:
        return make_tokens(need, data_dir, lang_dir_of(need, lang), options.get("bpe_units", ctc_targets.BPE_UNITS))

    @classmethod
    def stage1_options(cls, need: str, lang: Path) -> dict[str, str]:
        return {"lang_dir": str(lang_dir_of(need, lang))}

    def prepare(self) -> None:
        lang_dir = self.hparams.get("lang_dir")
        if lang_dir is None:
            raise DataDirError("the CTC head (mtl_lambda > 0) needs a token inventory: pass --lang_dir "
                               "(data/lang, written by stage 1)")
        self.tokens = inventory.read_tokens(Path(lang_dir) / TOKENS_FILE)

    def read(self, data_dir: Path, utt_ids: Sequence[str]) -> dict[str, Any]:
        name = FILES[self.kind]
        values = read_values(data_dir, name, utt_ids, "the CTC head (mtl_lambda > 0) needs it, run stage 1 or "
                                                      "train with mtl_lambda 0")
        index = {token: number for number, token in enumerate(self.tokens) if token != inventory.BLANK}
        return {utt: _token_ids(values[utt], index, Path(data_dir) / name, utt) for utt in utt_ids}

    def fields(self, value: tuple[int, ...]) -> dict[str, Any]:
        return {"tokens": torch.tensor(value, dtype=torch.long), "token_len": len(value)}

    def describe_values(self, values: dict[str, tuple[int, ...]]) -> str:
        """What the log says about a split's values."""
        return f", {sum(not tokens for tokens in values.values())} without CTC tokens (emotion task only)"

    def head_sizes(self) -> dict[str, int]:
        return {"n_tokens": len(self.tokens)}

    def inventories(self) -> dict[str, list[str]]:
        return {"tokens": list(self.tokens)}

    def loss(self, out, batch) -> torch.Tensor:
        if out.phn_log_probs is None:
            raise TargetError(f"mtl_lambda = {self.weight} needs the CTC head, but the model was built without "
                              "one; set mtl_lambda to 0 or build the model with its token inventory")
        return _head().phoneme_ctc_loss(out.phn_log_probs, out.frame_lens, batch.tokens.data, batch.token_len)

    def read_back(self) -> None:
        _head().UNALIGNABLE.flush()

    def keep(self, out, batch) -> dict[str, list]:
        lengths = batch.token_len.tolist()
        return {"ref_tokens": [row[:n] for row, n in zip(batch.tokens.data.cpu().tolist(), lengths)],
                "hyp_tokens": _head().ctc_greedy_decode(out.phn_log_probs.float(), out.frame_lens)}

    def columns(self, kept: dict[str, list]) -> dict[str, list[str]]:
        if not self.active:
            return {}
        return {column: [" ".join(self.tokens[t] for t in sequence) for sequence in kept[column]]
                for column in COLUMNS}

    def epoch_scores(self, kept: dict[str, list]) -> dict[str, float | None]:
        if not self.active:
            return {"PER": None}
        names = self.tokens
        return {"PER": metrics.token_error_rate([[names[t] for t in ref] for ref in kept["ref_tokens"]],
                                                [[names[t] for t in hyp] for hyp in kept["hyp_tokens"]])}

    @staticmethod
    def score(preds, model_facts: dict) -> dict[str, Any]:
        """PER and, for emotion-phonemes, the suffix accuracy; null without decoded tokens."""
        result = {"PER": None, "token_errors": None, "ref_token_count": None, "suffix_acc": None,
                  "n_no_tokens": None}
        if not all(column in preds.extras for column in COLUMNS):
            return result
        refs = [ref.split() for ref in preds.extras["ref_tokens"]]
        hyps = [hyp.split() for hyp in preds.extras["hyp_tokens"]]
        errors = sum(metrics.edit_distance(ref, hyp) for ref, hyp in zip(refs, hyps))
        length = sum(len(ref) for ref in refs)
        result["token_errors"] = errors
        result["ref_token_count"] = length
        result["PER"] = errors / length if length else None
        if model_facts.get("ctc_targets", "emophone") != "emophone":
            return result
        votes = suffix_votes(preds)
        result["suffix_acc"] = sum(vote == ref for vote, ref in zip(votes, preds.refs)) / len(votes)
        result["n_no_tokens"] = sum(vote is None for vote in votes)
        return result

    @staticmethod
    def reports(summary: dict) -> bool:
        return summary["pooled"].get("token_errors") is not None

    @staticmethod
    def describe(model_facts: dict) -> list[str]:
        return [f"CTC targets {model_facts['ctc_targets']}"] if model_facts.get("ctc_targets") else []

    # ---- serving
    @classmethod
    def served(cls, config: dict, given: str | None = None) -> "CTCTarget":
        """Every exported model: its config lists the tokens (none without a CTC head)."""
        target = cls({"ctc_targets": config.get("ctc_targets") or "emophone"})
        target.tokens = list(config["tokens"])
        return target

    @property
    def has_output(self) -> bool:
        return bool(self.tokens)

    def write_export(self, out_dir: Path) -> None:
        inventory.write_tokens(Path(out_dir) / TOKENS_FILE, self.tokens)

    def check_export(self, export_dir: Path) -> None:
        path = Path(export_dir) / TOKENS_FILE
        if inventory.read_tokens(path, allow_empty=True) != self.tokens:
            raise TargetError(f"{path}: disagrees with 'tokens' in config.json; the folder was edited by hand, "
                              "re-export it")

    def output_piece(self, out, row: int) -> torch.Tensor | None:
        """The utterance's CTC log-posteriors [frames, tokens]."""
        if out.phn_log_probs is None:
            return None
        return out.phn_log_probs[row, :int(out.frame_lens[row])].float().cpu()

    def combine(self, pieces: list[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
        """The frames of a windowed recording, each taken from the window that owns its time."""
        owned = []
        for index, (start, end, log_probs) in enumerate(pieces):
            low = start if index == 0 else (start + pieces[index - 1][1]) / 2
            high = end if index == len(pieces) - 1 else (pieces[index + 1][0] + end) / 2
            n = log_probs.shape[0]
            centres = start + (torch.arange(n, dtype=torch.float64) + 0.5) * (end - start) / n
            owned.append(log_probs[(centres >= low) & (centres < high)])
        return torch.cat(owned)

    def decode(self, piece: torch.Tensor | None) -> list[str] | None:
        if piece is None:
            return None
        sequence = _head().ctc_greedy_decode(piece.unsqueeze(0), torch.tensor([piece.shape[0]]))[0]
        return [self.tokens[index] for index in sequence]

    def output_text(self, value: list[str] | None) -> str:
        return f"phonemes={' '.join(value or [])}"

    def output_json(self, value: list[str] | None) -> dict[str, Any]:
        return {"emotion_phonemes": None if value is None else " ".join(value)}


def lang_dir_of(kind: str, lang: str | Path) -> Path:
    """The directory of a kind's token inventory: the recipe's lang dir (``data/lang``) for the
    emotion-phonemes, a sibling named after the kind for the others (``data/lang_char``, ``data/lang_bpe``)."""
    return Path(lang) if kind == "emophone" else Path(f"{lang}_{kind}")


def make_tokens(kind: str, data_dir: str | Path, lang_dir: str | Path, bpe_units: int = ctc_targets.BPE_UNITS) -> str:
    """Stage 1 for one kind of tokens: the data dir's labels and ``lang_dir/tokens.txt``; the summary line."""
    if kind == "emophone":
        report = emophone.label_data_dir(data_dir, lang_dir)
        return (f"labelled {report.n_utterances} utterances ({len(report.empty)} without phones, "
                f"{len(report.oov_counts)} OOV words); report: {report.report_path}")
    counts = ctc_targets.make_ctc_targets(data_dir, lang_dir, kind, bpe_units)
    return (f"{kind} targets: {counts['utterances']} utterances, {counts['units']} units, "
            f"{counts['empty']} without text; {lang_dir}/tokens.txt")


def _head():
    """The model layer's CTC head module, imported by the training-side methods only: loading the model
    package pulls in the encoders (transformers), which scoring a finished experiment never needs."""
    from serkit.model import ctc_head
    return ctc_head


def _token_ids(value: str, token_index: dict[str, int], path: Path, utt: str) -> tuple[int, ...]:
    unknown = [token for token in value.split() if token not in token_index]
    if unknown:
        raise DataDirError(f"{path}: utterance {utt} has token(s) {', '.join(sorted(set(unknown)))} that are not in "
                           "tokens.txt (or are the blank); re-run stage 1 so labels and inventory agree")
    return tuple(token_index[token] for token in value.split())


# --------------------------------------------------------------------------------------------
# Emotion-phoneme suffixes


class SuffixError(TargetError):
    """Decoded tokens carry no (or an impossible) emotion suffix."""


def token_emotion(token: str) -> int:
    """The emotion index a token carries as its digit suffix (``VS3`` -> 3)."""
    match = _SUFFIXED_TOKEN.fullmatch(token)
    if match is None:
        raise ValueError(f"token {token!r} has no emotion suffix (expected e.g. 'VS3')")
    return int(match.group(2))


def suffix_vote(tokens: Sequence[str]) -> int | None:
    """Majority emotion suffix of decoded tokens; None when nothing was decoded.

    A tie goes to the suffix that occurs first in the sequence: deterministic, and it does not
    favour any class index.
    """
    if not tokens:
        return None
    counts = Counter(token_emotion(token) for token in tokens)
    # most_common keeps first-occurrence order among equal counts.
    return counts.most_common(1)[0][0]


def suffix_votes(preds) -> list[int | None]:
    """The suffix vote of every utterance, with errors naming the file and line."""
    votes = []
    for hyp, line_number in zip(preds.extras["hyp_tokens"], preds.lines):
        try:
            vote = suffix_vote(hyp.split())
        except ValueError as error:
            raise SuffixError(f"{preds.path}:{line_number}: hyp_tokens: {error}") from None
        if vote is not None and vote >= len(preds.classes):
            raise SuffixError(
                f"{preds.path}:{line_number}: hyp_tokens carry emotion suffix {vote} "
                f"but there are only {len(preds.classes)} classes {preds.classes}")
        votes.append(vote)
    return votes
