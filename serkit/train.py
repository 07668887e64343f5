"""Stage 3: fine-tune W2V2-MTL on one fold, select on validation UA, score the test fold once.

The loop is SpeechBrain's :class:`~speechbrain.core.Brain`; this module adds what the recipe needs:

- the multi-task objective ``L = L_ER + lambda * L_PR`` (:func:`serkit.model.mtl_loss`);
- two optimizers, one for the wav2vec 2.0 encoder and one for the heads (the layer weights and the
  two linear layers), so each gets its own learning rate and gradient clipping, and the encoder's
  can be held back for the first ``freeze_encoder_steps`` optimizer steps;
- per epoch: a log line, a line in ``history.jsonl`` and a checkpoint; of the end-of-epoch
  checkpoints the newest (to resume) and the best by *validation* UA (to evaluate) are kept;
- after training: the best-by-validation-UA checkpoint scores the test fold and writes
  ``test_predictions.tsv`` and ``layer_weights.json``. The test fold is read only there, so it
  cannot influence model selection;
- ``model_config.json`` at the start and ``train.done`` at the very end (docs/formats.md).

An interrupted run started again with the same output folder continues from its newest checkpoint
(epoch counter, model, optimizers, the Brain's step counters, and the position in the epoch for
mid-epoch checkpoints); the batch order of every epoch is a function of the seed and epoch number,
so the continued run sees the batches the uninterrupted one would have.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import infer_device
from speechbrain.utils.run_opts import RunOptions

from serkit.dataio import DurationBucketBatchSampler, FoldData, collate_batch, load_fold_data
from serkit.datadir import c_sorted
from serkit.errors import SerkitError
from serkit.metrics import classification_scores, token_error_rate
from serkit.model import W2V2MultiTask, ctc_greedy_decode, mtl_loss

logger = logging.getLogger(__name__)

MODEL_CONFIG_FILE = "model_config.json"
HISTORY_FILE = "history.jsonl"
PREDICTIONS_FILE = "test_predictions.tsv"
LAYER_WEIGHTS_FILE = "layer_weights.json"
DONE_FILE = "train.done"
SAVE_DIR = "save"


class TrainError(SerkitError):
    """Training cannot start or finish as configured."""


@dataclasses.dataclass
class StageResults:
    """What one pass over a set produced: per-utterance predictions and the loss parts."""

    ids: list[str] = dataclasses.field(default_factory=list)
    refs: list[int] = dataclasses.field(default_factory=list)
    probs: list[list[float]] = dataclasses.field(default_factory=list)
    ref_tokens: list[list[int]] = dataclasses.field(default_factory=list)
    hyp_tokens: list[list[int]] | None = dataclasses.field(default_factory=list)  # None: no phoneme head
    loss_er: float = 0.0
    loss_pr: float = 0.0
    n_batches: int = 0

    @property
    def hyps(self) -> list[int]:
        """The predicted class of each utterance (highest posterior)."""
        return [int(np.argmax(p)) for p in self.probs]


class EmotionPhonemeBrain(sb.Brain):
    """The W2V2-MTL training loop (see the module docstring).

    Expects ``modules={"model": W2V2MultiTask}`` and these hparams: ``mtl_lambda``,
    ``encoder_opt_class`` and ``heads_opt_class`` (optimizer constructors taking a parameter list),
    ``freeze_encoder_steps`` and ``output_folder``. ``classes`` and ``tokens`` name the emotion and
    token indices in the files this class writes.
    """

    def __init__(self, *args, classes: list[str], tokens: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.classes = list(classes)
        self.tokens = list(tokens)
        self.output_folder = Path(self.hparams.output_folder)
        self.results = StageResults()
        self.train_loss = float("nan")
        self.train_parts = (float("nan"), float("nan"))  # (L_ER, L_PR) of the last training epoch
        self.last_layer_weights: list[float] | None = None
        self.encoder_frozen: bool | None = None  # unknown until the first batch sets it
        self.test_scores: dict | None = None

    # --------------------------------------------------------------------- model and optimizers

    @property
    def model(self) -> W2V2MultiTask:
        """The network itself, unwrapped from DistributedDataParallel if that was used."""
        model = self.modules.model
        return getattr(model, "module", model)

    def init_optimizers(self) -> None:
        """One optimizer for the encoder and one for the heads: separate learning rates and clipping.

        SpeechBrain clips each optimizer's first parameter group, so separate optimizers (rather than
        two groups in one) make ``max_grad_norm`` apply to both parts.
        """
        self.encoder_optimizer = self.hparams.encoder_opt_class(list(self.model.encoder_parameters()))
        self.heads_optimizer = self.hparams.heads_opt_class(list(self.model.head_parameters()))
        self.optimizers_dict = {"encoder_optimizer": self.encoder_optimizer, "heads_optimizer": self.heads_optimizer}
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, optimizer)

    def freeze_optimizers(self, optimizers: dict) -> dict:
        """While the encoder is frozen only the heads' optimizer steps."""
        if self.encoder_frozen:
            return {"heads_optimizer": optimizers["heads_optimizer"]}
        return optimizers

    def on_fit_batch_start(self, batch, should_step: bool) -> None:
        """Freeze the whole encoder for the first ``freeze_encoder_steps`` optimizer steps.

        Decided from the optimizer step count (saved in checkpoints), so a resumed run freezes and
        unfreezes at the same step as an uninterrupted one.
        """
        frozen = self.optimizer_step < int(self.hparams.freeze_encoder_steps)
        if frozen != self.encoder_frozen:
            self.model.set_encoder_frozen(frozen)
            if self.encoder_frozen is not None or frozen:
                logger.info("encoder %s at optimizer step %d", "frozen" if frozen else "unfrozen", self.optimizer_step)
            self.encoder_frozen = frozen

    # --------------------------------------------------------------------- forward and loss

    def compute_forward(self, batch, stage):
        """Waveforms and relative lengths -> :class:`serkit.model.MTLOutput`."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        return self.modules.model(wavs, wav_lens)

    def compute_objectives(self, predictions, batch, stage):
        """``L_ER + lambda * L_PR``; outside training also keeps each utterance's predictions."""
        loss, loss_er, loss_pr = mtl_loss(predictions, batch.emo, batch.tokens.data, batch.token_len,
                                          float(self.hparams.mtl_lambda))
        self.results.loss_er += float(loss_er.detach())
        self.results.loss_pr += float(loss_pr.detach())
        self.results.n_batches += 1
        if stage != sb.Stage.TRAIN:
            self._keep_predictions(predictions, batch)
        return loss

    def _keep_predictions(self, predictions, batch) -> None:
        results = self.results
        results.ids.extend(batch.id)
        results.refs.extend(int(e) for e in batch.emo)
        results.probs.extend(torch.softmax(predictions.emo_logits.float(), dim=-1).cpu().tolist())
        lengths = batch.token_len.tolist()
        results.ref_tokens.extend(row[:n] for row, n in zip(batch.tokens.data.cpu().tolist(), lengths))
        if predictions.phn_log_probs is None:
            results.hyp_tokens = None
        else:
            results.hyp_tokens.extend(ctc_greedy_decode(predictions.phn_log_probs.float(), predictions.frame_lens))
        self.last_layer_weights = predictions.layer_weights.detach().float().cpu().tolist()

    # --------------------------------------------------------------------- stages

    def on_stage_start(self, stage, epoch=None) -> None:
        self.results = StageResults()

    def on_stage_end(self, stage, stage_loss, epoch=None) -> None:
        if stage == sb.Stage.TRAIN:
            self.train_loss = float(stage_loss)
            self.train_parts = self._loss_parts()
        elif stage == sb.Stage.VALID:
            self._end_of_epoch(float(stage_loss), epoch)
        else:
            self._end_of_test(float(stage_loss))

    def _loss_parts(self) -> tuple[float, float]:
        n = max(self.results.n_batches, 1)
        return self.results.loss_er / n, self.results.loss_pr / n

    def _scores(self) -> tuple[dict, float | None]:
        """Emotion scores and PER (None without a phoneme head) of the stage just finished."""
        results = self.results
        scores = classification_scores(results.refs, results.hyps, len(self.classes))
        per = None
        if results.hyp_tokens is not None:
            names = self.tokens
            per = token_error_rate([[names[t] for t in ref] for ref in results.ref_tokens],
                                   [[names[t] for t in hyp] for hyp in results.hyp_tokens])
        return scores, per

    def _end_of_epoch(self, valid_loss: float, epoch: int) -> None:
        """Log the epoch, append it to history.jsonl and checkpoint (keep newest + best valid UA)."""
        scores, per = self._scores()
        record = {
            "epoch": epoch,
            "train_loss": self.train_loss,
            "valid_loss": valid_loss,
            "valid_WA": scores["WA"],
            "valid_UA": scores["UA"],
            "valid_PER": per,
            "lr_encoder": self.encoder_optimizer.param_groups[0]["lr"],
            "lr_heads": self.heads_optimizer.param_groups[0]["lr"],
        }
        train_er, train_pr = self.train_parts
        valid_er, valid_pr = self._loss_parts()
        per_text = "n/a" if per is None else f"{100 * per:.2f}%"
        logger.info("epoch %d | train loss %.4f (ER %.4f, PR %.4f) | valid loss %.4f (ER %.4f, PR %.4f) "
                    "WA %.2f%% UA %.2f%% PER %s | lr encoder %.2e heads %.2e",
                    epoch, self.train_loss, train_er, train_pr,
                    valid_loss, valid_er, valid_pr, 100 * scores["WA"], 100 * scores["UA"], per_text,
                    record["lr_encoder"], record["lr_heads"])
        # History first: if the process dies before the checkpoint, the epoch is re-run and its
        # line replaced, so history.jsonl always holds one line per finished epoch.
        write_history(self.output_folder / HISTORY_FILE, record)
        self.checkpointer.save_and_keep_only(
            meta={"UA": scores["UA"], "WA": scores["WA"], "PER": per, "loss": valid_loss, "epoch": epoch},
            max_keys=["UA"], num_to_keep=1)

    def on_evaluate_start(self, max_key=None, min_key=None) -> None:
        """Load the checkpoint with the best validation UA (newest on a tie); never a test-based choice."""
        best = best_checkpoint(self.checkpointer)
        self.checkpointer.load_checkpoint(best)
        logger.info("scoring the test fold with %s (epoch %s, valid UA %.4f)",
                    best.path.name, best.meta.get("epoch"), best.meta["UA"])

    def _end_of_test(self, test_loss: float) -> None:
        scores, per = self._scores()
        write_predictions(self.output_folder / PREDICTIONS_FILE, self.results, self.classes, self.tokens)
        atomic_write_text(self.output_folder / LAYER_WEIGHTS_FILE,
                          json.dumps({"weights": self.last_layer_weights}, indent=2) + "\n")
        per_text = "n/a" if per is None else f"{100 * per:.2f}%"
        logger.info("test: %d utterances, loss %.4f, WA %.2f%% UA %.2f%% PER %s", len(self.results.ids), test_loss,
                    100 * scores["WA"], 100 * scores["UA"], per_text)
        self.test_scores = {"WA": scores["WA"], "UA": scores["UA"], "PER": per, "loss": test_loss}


# ----------------------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a killed run never leaves half a file behind."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_history(path: Path) -> list[dict]:
    """The records of ``history.jsonl`` (empty if the file does not exist yet)."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise TrainError(f"{path}:{line_number}: not a JSON line ({error}); delete the damaged line "
                                     "(the epoch is re-logged when it is trained again)") from None
    return records


def write_history(path: Path, record: dict) -> None:
    """Add ``record`` to history.jsonl, replacing records of the same or later epochs.

    Later epochs can only be there if a run was interrupted after logging but before checkpointing,
    and is now repeating those epochs; their old lines describe a run that no longer exists.
    """
    kept = [old for old in read_history(path) if int(old["epoch"]) < int(record["epoch"])]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept + [record]))


def write_predictions(path: Path, results: StageResults, classes: list[str], tokens: list[str]) -> None:
    """``test_predictions.tsv``: header ``utt ref hyp p_<class>... ref_tokens hyp_tokens``, sorted by utt."""
    header = ["utt", "ref", "hyp"] + [f"p_{label}" for label in classes] + ["ref_tokens", "hyp_tokens"]
    rows = {}
    hyps = results.hyps
    for i, utt in enumerate(results.ids):
        hyp_tokens = "" if results.hyp_tokens is None else " ".join(tokens[t] for t in results.hyp_tokens[i])
        rows[utt] = ([utt, classes[results.refs[i]], classes[hyps[i]]] + [f"{p:.6f}" for p in results.probs[i]]
                     + [" ".join(tokens[t] for t in results.ref_tokens[i]), hyp_tokens])
    lines = ["\t".join(header)] + ["\t".join(rows[utt]) for utt in c_sorted(rows)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def write_model_config(path: Path, model: W2V2MultiTask, data: FoldData, hparams: dict) -> None:
    """``model_config.json``: what export and inference need to rebuild the network offline."""
    config = model.config_dict()  # encoder_config, n_emotions, n_tokens, phoneme_head
    config.update(classes=data.classes, tokens=data.tokens, sample_rate=int(hparams["sample_rate"]),
                  **{"lambda": float(hparams["mtl_lambda"])})
    atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def best_checkpoint(checkpointer: Checkpointer):
    """The checkpoint with the highest validation UA; ties go to the newest (as serkit.export does)."""
    best = checkpointer.find_checkpoint(
        importance_key=lambda ckpt: (float(ckpt.meta["UA"]), float(ckpt.meta["unixtime"])),
        ckpt_predicate=lambda ckpt: ckpt.meta.get("UA") is not None)
    if best is None:
        raise TrainError(f"{checkpointer.checkpoints_dir}: no end-of-epoch checkpoint with a validation UA; "
                         "train for at least one epoch (number_of_epochs >= 1) before scoring the test fold")
    return best


# ----------------------------------------------------------------------------- one fold, start to end


def cpu_safe_run_opts(hparams: dict, run_opts: RunOptions | dict | None) -> RunOptions:
    """Run options with mixed precision switched off on CPU (serkit trains fp32 there).

    SpeechBrain refuses fp16 on CPU with an error and would run bf16 autocast on CPU; neither is
    wanted for a run that a config written for a GPU happens to start on a CPU machine.
    """
    if run_opts is None:
        run_opts = RunOptions()
    elif isinstance(run_opts, dict):
        run_opts = RunOptions.from_dictionary(run_opts)
    device = run_opts.device or hparams.get("device") or infer_device()
    wanted = {key: (run_opts[key] if key in run_opts.overridden_args else hparams.get(key, "fp32"))
              for key in ("precision", "eval_precision")}
    if str(device).startswith("cpu") and any(value != "fp32" for value in wanted.values()):
        logger.warning("device is CPU: ignoring precision=%s / eval_precision=%s, training in fp32",
                       wanted["precision"], wanted["eval_precision"])
        run_opts = dataclasses.replace(run_opts, precision="fp32", eval_precision="fp32",
                                       overridden_args=set(run_opts.overridden_args) | {"precision", "eval_precision"})
    return run_opts


def _loader(brain: EmotionPhonemeBrain, dataset, stage, hparams: dict, shuffle: bool):
    sampler = DurationBucketBatchSampler(dataset.durations, int(hparams["batch_size"]), shuffle=shuffle,
                                         seed=int(hparams["seed"]))
    # Only the training loader is checkpointed (its position within an epoch).
    loader = brain.make_dataloader(dataset, stage, ckpt_prefix="dataloader-" if stage == sb.Stage.TRAIN else None,
                                   batch_sampler=sampler, collate_fn=collate_batch,
                                   num_workers=int(hparams.get("num_workers", 0)))
    return loader, sampler


def train_fold(hparams: dict, run_opts: RunOptions | dict | None = None) -> dict:
    """Train, select and test one fold as ``hparams`` (a loaded conf/w2v2_mtl.yaml) describes.

    Returns the test scores ``{WA, UA, PER, loss}``. Writes into ``hparams["output_folder"]`` the
    files listed in docs/formats.md. A folder that already has ``train.done`` raises
    :class:`TrainError` (``python -m serkit.bin.train`` checks first and skips such folds).
    """
    out = Path(hparams["output_folder"])
    if (out / DONE_FILE).exists():
        raise TrainError(f"{out / DONE_FILE}: this fold is already trained; remove the file to train it again")
    out.mkdir(parents=True, exist_ok=True)
    lam = float(hparams["mtl_lambda"])
    if lam < 0:
        raise TrainError(f"mtl_lambda must be >= 0, got {lam}")
    data = load_fold_data(hparams["data_dir"], hparams["fold_dir"], hparams["lang_dir"],
                          sample_rate=int(hparams["sample_rate"]), max_duration=hparams.get("max_duration"),
                          require_phones=lam > 0)
    model = W2V2MultiTask.from_pretrained(hparams["encoder_source"], n_emotions=len(data.classes),
                                          n_tokens=len(data.tokens), phoneme_head=lam > 0,
                                          freeze_feature_encoder=bool(hparams["freeze_feature_encoder"]))
    write_model_config(out / MODEL_CONFIG_FILE, model, data, hparams)

    checkpointer = Checkpointer(out / SAVE_DIR, recoverables={"model": model, "counter": hparams["epoch_counter"]})
    brain = EmotionPhonemeBrain(modules={"model": model}, hparams=hparams,
                                run_opts=cpu_safe_run_opts(hparams, run_opts), checkpointer=checkpointer,
                                classes=data.classes, tokens=data.tokens)
    train_loader, train_sampler = _loader(brain, data.train, sb.Stage.TRAIN, hparams, shuffle=True)
    brain.train_sampler = train_sampler  # Brain calls set_epoch(epoch) on it before every epoch
    valid_loader, _ = _loader(brain, data.valid, sb.Stage.VALID, hparams, shuffle=False)
    brain.fit(hparams["epoch_counter"], train_loader, valid_loader)

    test_loader, _ = _loader(brain, data.test, sb.Stage.TEST, hparams, shuffle=False)
    brain.evaluate(test_loader)
    atomic_write_text(out / DONE_FILE, json.dumps(brain.test_scores) + "\n")
    return brain.test_scores
