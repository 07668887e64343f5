"""Stage 3: train any model family on one fold, select on validation UA, score the test fold once.

The loop is SpeechBrain's :class:`~speechbrain.core.Brain`; this module adds what every recipe needs
and knows no family by name (the family is an object of :mod:`serkit.model.family`):

- the objective of the configured targets (:mod:`serkit.targets`; e.g. ``L = L_ER + mtl_lambda * L_PR``
  for emotion + a CTC head) and the named loss parts it logs;
- one optimizer per parameter group the family declares (e.g. ``encoder`` and ``heads`` for W2V2-MTL,
  ``model`` for TIM-Net), each with its own learning rate and gradient clipping; the ``encoder``
  group can be held still for the first ``freeze_encoder_steps`` optimizer steps;
- input normalisation statistics from the fold's *training* utterances only;
- per epoch: a log line, a line in ``history.jsonl`` and a checkpoint; of the end-of-epoch
  checkpoints the newest (to resume) and the best by *validation* UA (to evaluate) are kept;
- after training: the best-by-validation-UA checkpoint scores the test fold and writes
  ``test_predictions.tsv`` (with each target's decoded outputs, e.g. CTC tokens) and the family's
  per-fold extras (e.g. ``layer_weights.json``). The test fold is read only there, so it cannot
  influence model selection;
- ``provenance.json`` and ``model_config.json`` at the start and ``train.done`` at the very end
  (:mod:`serkit.training.expdir`);
- several processes (DDP under torchrun, :mod:`serkit.training.distributed`) train one fold together: each
  takes its share of every global batch, the processes' results are combined so that losses and
  metrics are those of the whole sets, and only rank 0 writes files (see :class:`SERBrain`).

Families trained in closed form (``trainer = "fit"``, e.g. eGeMAPS + SVM) skip the loop and fit on
the same datasets, writing the same files.

An interrupted run started again with the same output folder continues from its newest intact
checkpoint (:mod:`serkit.training.checkpoints`: epoch counter, model, optimizers, the Brain's step counters,
the position in the epoch for mid-epoch checkpoints, and every random state: torch CPU/CUDA, numpy,
Python, the training loader's worker-seed generator). The batch order of every epoch is a function
of the seed and epoch number, and training crops are seeded by (seed, epoch, utterance), so the
continued run sees the batches, crops and dropout masks the uninterrupted one would have and ends
with the same predictions (tests/test_resume.py kills a run with SIGKILL to check it).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.distributed import ddp_barrier, infer_device, run_on_main
from speechbrain.utils.run_opts import RunOptions
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from serkit.training import distributed, expdir, provenance, tensorboard
from serkit.features.augment import make_augmenter
from serkit.training.averaging import average_state_dicts, remove_averaged
from serkit.training.checkpoints import JsonState, RandomStates, SafeCheckpointer, torch_load_safe
from serkit.data.segments import PAPER_SETTINGS, SegmentSettingsError, balance_training_set
from serkit.data.dataio import DurationBucketBatchSampler, batch_inputs, check_batch_seconds, load_fold_data
from serkit.data.dataio import check_class_coverage, check_fold_audio
from serkit.errors import SerkitError
from serkit.features import FeatureStats, feature_from_dict
from serkit.scoring.metrics import classification_scores
from serkit.model import SERModel, get_family
from serkit.model.build import build_model, model_config
from serkit.model.common import absolute_lengths
from serkit.model.family import ModelFamily
from serkit.training.precision import PrecisionError, resolve_precision
from serkit.features.speaker_norm import check_normalisation, normalise_per_speaker
from serkit.targets import TargetError, TargetSet

logger = logging.getLogger(__name__)


class TrainError(SerkitError):
    """Training cannot start or finish as configured."""


@dataclasses.dataclass
class StageResults:
    """What one pass over a set produced: per-utterance outputs of each target and the summed loss parts."""

    ids: list[str] = dataclasses.field(default_factory=list)
    kept: dict[str, dict[str, list]] = dataclasses.field(default_factory=dict)  # target -> output -> per utt
    loss_parts: dict[str, float] = dataclasses.field(default_factory=dict)
    n_batches: int = 0

    def add(self, ids: list[str], kept: dict[str, dict[str, list]]) -> None:
        """Append the per-utterance outputs of a batch (or of another process's share of the set)."""
        self.ids.extend(ids)
        for target, outputs in kept.items():
            mine = self.kept.setdefault(target, {})
            for name, values in outputs.items():
                mine.setdefault(name, []).extend(values)

    def mean_parts(self) -> dict[str, float]:
        n = max(self.n_batches, 1)
        return {name: total / n for name, total in self.summed_parts().items()}

    def summed_parts(self) -> dict[str, float]:
        """The loss parts summed so far, as numbers (the sums are device tensors while a stage runs)."""
        return {name: float(total) for name, total in self.loss_parts.items()}



class SERBrain(sb.Brain):
    """The training loop for any family (see the module docstring).

    Expects ``modules={"model": SERModel}`` and these hparams: ``optimizers`` (a mapping from each of
    the family's parameter-group names to an optimizer constructor taking a parameter list),
    ``freeze_encoder_steps`` (optional) and ``output_folder``. ``targets`` (:class:`serkit.targets.TargetSet`)
    compute the loss and name the labels in the files this class writes.
    """

    def __init__(self, *args, family: ModelFamily, targets: TargetSet, **kwargs):
        super().__init__(*args, **kwargs)
        self.family = family
        self.targets = targets
        self.classes = list(targets.inventories()["classes"])
        self.output_folder = Path(self.hparams.output_folder)
        self.results = StageResults()
        self.train_loss = float("nan")
        self.train_parts: dict[str, float] = {}
        self.fold_extras: dict[str, list[float]] = {}
        self.encoder_frozen: bool | None = None  # unknown until the first batch sets it
        self.test_scores: dict | None = None
        self.resumed_parts: dict | None = None  # the loss parts of an epoch resumed mid-way
        self.stage: sb.Stage | None = None
        self.current_batch = None
        self.valid_uas: dict[int, float] = {}  # validation UA of every finished epoch (early stopping)
        self._unchecked: list = []  # (loss, batch) of steps whose loss was not read back yet
        self._unaveraged: list = []  # (step, loss) not yet in the running mean
        # run.sh --tensorboard (serkit.bin.train --tensorboard): live curves besides history.jsonl
        self.tensorboard = (tensorboard.make_logger(self.output_folder)
                            if getattr(self.hparams, "tensorboard", False) and distributed.is_main() else None)
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable("epoch_parts", self, custom_save_hook=SERBrain.save_epoch_parts,
                                              custom_load_hook=SERBrain.load_epoch_parts, optional_load=True)

    # --------------------------------------------------------------------- model and optimizers

    @property
    def model(self) -> SERModel:
        """The network itself, unwrapped from DistributedDataParallel if that was used."""
        model = self.modules.model
        return getattr(model, "module", model)

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The family's groups, with the targets' heads the model adds (e.g. a CTC head) in the last one."""
        groups = {name: list(params) for name, params in self.family.param_groups(self.model).items()}
        groups[list(groups)[-1]].extend(self.model.head_parameters())
        return groups

    def init_optimizers(self) -> None:
        """One optimizer per parameter group: separate learning rates and clipping.

        SpeechBrain clips each optimizer's first parameter group, so separate optimizers (rather than
        several groups in one) make ``max_grad_norm`` apply to every part.
        """
        constructors = self.hparams.optimizers
        groups = self.parameter_groups()
        unknown = [name for name in groups if name not in constructors]
        if unknown:
            raise TrainError(f"the config's `optimizers` has no entry for parameter group(s) {', '.join(unknown)} "
                             f"of family {self.family.name} (it has: {', '.join(constructors)})")
        self.optimizers_dict = {f"{name}_optimizer": constructors[name](params) for name, params in groups.items()}
        if self.checkpointer is not None:
            for name, optimizer in self.optimizers_dict.items():
                self.checkpointer.add_recoverable(name, optimizer)

    def freeze_optimizers(self, optimizers: dict) -> dict:
        """While the encoder is frozen its optimizer does not step."""
        if self.encoder_frozen:
            return {name: opt for name, opt in optimizers.items() if name != "encoder_optimizer"}
        return optimizers

    def on_fit_batch_start(self, batch, should_step: bool) -> None:
        """Freeze the ``encoder`` group for the first ``freeze_encoder_steps`` optimizer steps.

        Decided from the optimizer step count (saved in checkpoints), so a resumed run freezes and
        unfreezes at the same step as an uninterrupted one.
        """
        self.current_batch = batch  # to name its utterances if the loss is not finite
        if "encoder_optimizer" not in self.optimizers_dict:
            return
        frozen = self.optimizer_step < int(getattr(self.hparams, "freeze_encoder_steps", 0) or 0)
        if frozen != self.encoder_frozen:
            self.family.set_frozen(self.model, "encoder", frozen)
            if self.encoder_frozen is not None or frozen:
                logger.info("encoder %s at optimizer step %d", "frozen" if frozen else "unfrozen", self.optimizer_step)
            self.encoder_frozen = frozen

    # --------------------------------------------------------------------- non-finite losses

    def check_loss_isfinite(self, loss) -> None:
        """Queue the step's loss for the non-finite check (:meth:`read_back` runs it, see "reading back")."""
        self._unchecked.append((loss.detach(), self.current_batch))
        if len(self._unchecked) >= self.sync_every:
            self._check_losses()

    def _check_losses(self) -> None:
        if not self._unchecked:
            return
        values = torch.stack([loss.float().to(self.device) for loss, _ in self._unchecked]).tolist()
        unchecked, self._unchecked = self._unchecked, []
        for value, (_, batch) in zip(values, unchecked):
            if not math.isfinite(value):
                self._nonfinite_loss(value, batch)

    def _nonfinite_loss(self, value: float, batch) -> None:
        """A non-finite training loss names its batch's utterances (and those with NaN/Inf input).

        Non-finite input (a broken feature or cache entry; poisoned audio files are refused earlier,
        when read) stops the run at once: it comes back every epoch. Otherwise SpeechBrain's
        ``nonfinite_patience`` allows a few such batches (a rare overflow) with a warning naming them.
        """
        ids = list(batch.id) if batch is not None else []
        poisoned = nonfinite_inputs(batch) if batch is not None else []
        where = f"epoch {self.hparams.epoch_counter.current}, batch of utterance(s) {', '.join(ids) or '?'}"
        if poisoned:
            raise TrainError(f"training loss is {value} ({where}): utterance(s) {', '.join(poisoned)} have "
                             "NaN or infinite input values; check their audio files (serkit.data.audio.audio_problem) "
                             "and remove or replace them in the data directory")
        self.nonfinite_count += 1
        if self.nonfinite_count > self.nonfinite_patience:
            raise TrainError(f"training loss is {value} ({where}), and {self.nonfinite_count} batches of this "
                             f"epoch were non-finite (nonfinite_patience {self.nonfinite_patience}); the inputs are "
                             "finite, so training diverged: lower the learning rate or clip gradients harder")
        logger.warning("training loss is %s (%s); %d of the %d non-finite batches allowed this epoch "
                       "(nonfinite_patience)", value, where, self.nonfinite_count, self.nonfinite_patience)

    # --------------------------------------------------------------------- reading values back
    # Reading a value the device computed (float(loss), `if torch.isfinite(loss)`) makes the host wait
    # until the device has finished everything queued; once a step, that leaves a GPU idle while the
    # host prepares the next step. So the training step reads nothing back: each step's loss, whether it
    # is finite and the CTC head's unalignable count stay on the device and are read every
    # ``sync_every`` steps, before every checkpoint and at the end of the epoch. The running training
    # loss (progress bar, history) is then exactly SpeechBrain's. On a CPU reading is free:
    # ``sync_every: auto`` is 1 there (every step) and 50 on a GPU.

    @property
    def sync_every(self) -> int:
        setting = getattr(self.hparams, "sync_every", "auto")
        if setting in (None, "auto"):
            return 1 if self.device_type == "cpu" else 50
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise TrainError(f"sync_every must be a positive number of steps or auto, got {setting!r}")
        return setting

    def fit_batch(self, batch):
        """SpeechBrain's training step, reading nothing back from the device (see "reading back").

        The same steps as :meth:`speechbrain.core.Brain.fit_batch`; only the returned loss stays on
        the device (SpeechBrain's copies it to the CPU). Under DDP the loss reported is the global batch's.
        """
        should_step = (self.step % self.grad_accumulation_factor) == 0
        self.on_fit_batch_start(batch, should_step)
        with self.no_sync(not should_step):
            with self.training_ctx:
                outputs = self.compute_forward(batch, sb.Stage.TRAIN)
                loss = self.compute_objectives(outputs, batch, sb.Stage.TRAIN)
            scaled_loss = self.scaler.scale(loss / self.grad_accumulation_factor)
            self.check_loss_isfinite(scaled_loss)
            scaled_loss.backward()
        if should_step:
            self.optimizers_step()
        self.on_fit_batch_end(batch, outputs, loss, should_step)
        return self._global_loss(loss.detach())

    def update_average(self, loss, avg_loss):
        """SpeechBrain's running mean of the losses; in training, updated when the losses are read back."""
        if self.stage != sb.Stage.TRAIN:
            return super().update_average(loss, avg_loss)
        self._unaveraged.append((self.step, loss))
        if len(self._unaveraged) >= self.sync_every:
            self._average_losses()
        return self.avg_train_loss

    def _average_losses(self) -> None:
        if not self._unaveraged:
            return
        values = torch.stack([loss.float().to(self.device) for _, loss in self._unaveraged]).tolist()
        average = float(self.avg_train_loss)
        for (step, _), value in zip(self._unaveraged, values):
            if math.isfinite(value):  # SpeechBrain's update: non-finite losses leave the mean alone
                average -= average / step
                average += value / step
        self.avg_train_loss, self._unaveraged = average, []

    def read_back(self) -> None:
        """Read everything the training steps left on the device: loss checks, running loss, warnings."""
        self._check_losses()
        self._average_losses()
        self.targets.read_back()

    def _save_intra_epoch_ckpt(self):
        """A mid-epoch checkpoint saves the running loss: read it back first."""
        self.read_back()
        super()._save_intra_epoch_ckpt()

    # --------------------------------------------------------------------- forward and loss

    def compute_forward(self, batch, stage):
        """Model inputs and relative lengths -> :class:`serkit.model.SEROutput`.

        Absolute lengths are computed and checked on the CPU, before the batch moves to the device.
        """
        lengths = [absolute_lengths(x, relative.cpu()) for x, relative in zip(*batch_inputs(batch))]
        batch = batch.to(self.device)
        inputs, relative = batch_inputs(batch)
        return self.modules.model(inputs, relative, lengths=[n.to(self.device, non_blocking=True) for n in lengths],
                                  **self.targets.model_inputs(batch))

    def compute_objectives(self, predictions, batch, stage):
        """The family's loss; outside training also keeps each utterance's predictions."""
        loss, parts = self.family.loss(predictions, batch, self.targets)
        weight = self.shard_weight(batch)  # 1.0 in a single process
        for name, value in parts.items():  # summed on the device: read back only at the end of the stage
            self.results.loss_parts[name] = self.results.loss_parts.get(name, 0.0) + weight * value.detach().double()
        self.results.n_batches += 1
        if stage != sb.Stage.TRAIN:
            self._keep_predictions(predictions, batch)
        return loss * weight

    def _keep_predictions(self, predictions, batch) -> None:
        self.results.add(list(batch.id), self.targets.keep(predictions, batch))
        self.fold_extras = {name: value.detach().float().cpu().tolist()
                            for name, value in predictions.fold_extras.items()}
        self.fold_extras = {name: value.detach().float().cpu().tolist()
                            for name, value in predictions.fold_extras.items()}

    # --------------------------------------------------------------------- stages

    def on_stage_start(self, stage, epoch=None) -> None:
        self.stage = stage
        self.results = StageResults()
        if stage != sb.Stage.TRAIN:
            distributed.broadcast_buffers(self.model)  # every process evaluates the model rank 0 saves
        if stage == sb.Stage.TRAIN and self.resumed_parts is not None:
            self.results.loss_parts = dict(self.resumed_parts["loss_parts"])
            self.results.n_batches = int(self.resumed_parts["n_batches"])
            self.resumed_parts = None

    # The per-part training losses summed so far in the epoch (history.jsonl's train_<part>) go into
    # mid-epoch checkpoints, so a resumed epoch logs the means the uninterrupted one would have.

    def save_epoch_parts(self, path) -> None:
        if sb.utils.distributed.if_main_process():
            Path(path).write_text(json.dumps({"loss_parts": self.results.summed_parts(),
                                              "n_batches": self.results.n_batches}) + "\n", encoding="utf-8")

    def load_epoch_parts(self, path, end_of_epoch) -> None:
        self.resumed_parts = None if end_of_epoch else json.loads(Path(path).read_text(encoding="utf-8"))

    def on_stage_end(self, stage, stage_loss, epoch=None) -> None:
        if stage == sb.Stage.TRAIN:
            self.read_back()
            stage_loss = self.avg_train_loss
        self.targets.read_back()  # e.g. validation and test batches' unalignable CTC count, read once per stage
        self.combine_results(stage)
        if stage == sb.Stage.TRAIN:
            self.train_loss = float(stage_loss)
            self.train_parts = self.results.mean_parts()
        elif stage == sb.Stage.VALID:
            self._end_of_epoch(float(stage_loss), epoch)
        else:
            self._end_of_test(float(stage_loss))

    def _scores(self) -> tuple[dict, dict]:
        """The stage's scores: the primary target's (``WA``, ``UA``: UA selects checkpoints) and every
        other target's (e.g. ``{"PER": ...}``, null for an inactive target)."""
        scores = self.targets.epoch_scores(self.results.kept)
        return scores, {key: value for key, value in scores.items() if key not in ("WA", "UA")}

    def _end_of_epoch(self, valid_loss: float, epoch: int) -> None:
        """Log the epoch, append it to history.jsonl and checkpoint (keep newest + best valid UA)."""
        scores, others = self._scores()
        record = {"epoch": epoch, "train_loss": self.train_loss, "valid_loss": valid_loss,
                  "valid_WA": scores["WA"], "valid_UA": scores["UA"], **{f"valid_{k}": v for k, v in others.items()}}
        record.update({f"lr_{name.removesuffix('_optimizer')}": optimizer.param_groups[0]["lr"]
                       for name, optimizer in self.optimizers_dict.items()})
        record.update({f"train_{name}": value for name, value in self.train_parts.items()})
        record.update({f"valid_{name}": value for name, value in self.results.mean_parts().items()})
        self.valid_uas[int(epoch)] = float(scores["UA"])
        record.update(self._early_stop_fields(epoch))
        logger.info("epoch %d | train loss %.4f (%s) | valid loss %.4f (%s) WA %.2f%% UA %.2f%%%s | lr %s",
                    epoch, self.train_loss, _parts_text(self.train_parts), valid_loss,
                    _parts_text(self.results.mean_parts()), 100 * scores["WA"], 100 * scores["UA"], _scores_text(others),
                    " ".join(f"{key[3:]} {value:.2e}" for key, value in record.items() if key.startswith("lr_")))
        # History first: if the process dies before the checkpoint, the epoch is re-run and its
        # line replaced, so history.jsonl always holds one line per finished epoch.
        if distributed.is_main():
            expdir.write_history(self.output_folder / expdir.HISTORY_FILE, record)
        if self.tensorboard is not None:
            tensorboard.log_epoch(self.tensorboard, record)
        self.checkpointer.save_and_keep_only(
            meta={"UA": scores["UA"], "WA": scores["WA"], **others, "loss": valid_loss, "epoch": epoch},
            max_keys=["UA"], num_to_keep=average_nbest_setting(vars(self.hparams)) or 1)

    def on_fit_start(self) -> None:
        """SpeechBrain's start (which resumes from the newest checkpoint), then the validation UAs of
        the checkpointed epochs from history.jsonl, so that a resumed run stops where an uninterrupted
        one would (lines of epochs after the checkpoint belong to a run that no longer exists)."""
        if self.checkpointer is not None and distributed.is_main():
            remove_averaged(self.checkpointer)  # derived at the end of training, never resumed from
        ddp_barrier()
        super().on_fit_start()
        done = int(self.hparams.epoch_counter.current)
        history = expdir.read_history(self.output_folder / expdir.HISTORY_FILE)
        self.valid_uas = {int(r["epoch"]): float(r["valid_UA"]) for r in history
                          if int(r["epoch"]) <= done and r.get("valid_UA") is not None}

    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without a better validation UA (never without patience)."""
        patience = early_stop_patience(vars(self.hparams))
        return patience is not None and improvement_state(self.valid_uas)[1] >= patience

    def _early_stop_fields(self, epoch: int) -> dict:
        """The history fields of early stopping for ``epoch`` (none without ``patience``), logged when it stops."""
        patience = early_stop_patience(vars(self.hparams))
        if patience is None:
            return {}
        best_epoch, since = improvement_state(self.valid_uas)
        fields = {"epochs_without_improvement": since}
        if since >= patience:
            fields["early_stop"] = {"patience": patience, "best_epoch": best_epoch,
                                    "best_valid_UA": self.valid_uas[best_epoch],
                                    "reason": f"no better validation UA in the {since} epochs after epoch {best_epoch}"}
            logger.info("early stop after epoch %d: no better validation UA than epoch %d's %.2f%% for %d epochs "
                        "(patience %d)", epoch, best_epoch, 100 * self.valid_uas[best_epoch], since, patience)
        return fields

    def on_evaluate_start(self, max_key=None, min_key=None) -> None:
        """Load the checkpoint with the best validation UA (newest on a tie); never a test-based choice.

        A broken best checkpoint is skipped with a warning (the next best intact one is used).
        """
        best_checkpoint(self.checkpointer)  # a clear error when no checkpoint has a validation UA
        if average_nbest_setting(vars(self.hparams)):
            averaged = self.checkpointer.recover_if_possible(ckpt_predicate=lambda ckpt: expdir.is_averaged(ckpt.meta))
            logger.info("scoring the test fold with the average of epochs %s (valid UA %.4f)",
                        averaged.meta[expdir.AVERAGED_KEY], averaged.meta["UA"])
            return
        best = self.checkpointer.recover_if_possible(importance_key=lambda ckpt: expdir.best_key(ckpt.meta),
                                                     ckpt_predicate=lambda ckpt: ckpt.meta.get("UA") is not None)
        logger.info("scoring the test fold with %s (epoch %s, valid UA %.4f)",
                    best.path.name, best.meta.get("epoch"), best.meta["UA"])

    def average_best(self, n: int, valid_loader) -> None:
        """Average the ``n`` best checkpoints by validation UA (:mod:`serkit.training.averaging`), score the average on
        the validation set and keep it as a checkpoint; its epochs go to the log and the last history line."""
        best = self.checkpointer.find_checkpoints(
            importance_key=lambda ckpt: expdir.best_key(ckpt.meta), max_num_checkpoints=n,
            ckpt_predicate=lambda ckpt: ckpt.meta.get("UA") is not None and not expdir.is_averaged(ckpt.meta))
        epochs = [int(ckpt.meta["epoch"]) for ckpt in best]
        self.model.load_state_dict(average_state_dicts([torch_load_safe(ckpt.paramfiles["model"]) for ckpt in best]))
        self.on_stage_start(sb.Stage.VALID)
        self.modules.eval()
        with torch.no_grad():
            for batch in valid_loader:
                self.evaluate_batch(batch, sb.Stage.VALID)
        self.targets.read_back()
        self.combine_results(sb.Stage.VALID)
        scores, others = self._scores()
        logger.info("averaged the %d best checkpoints by validation UA: epochs %s (valid UA %s); the average: "
                    "valid WA %.2f%% UA %.2f%%", len(best), epochs, " ".join(f"{c.meta['UA']:.4f}" for c in best),
                    100 * scores["WA"], 100 * scores["UA"])
        if distributed.is_main():
            path = self.output_folder / expdir.HISTORY_FILE
            last = expdir.read_history(path)[-1]
            expdir.write_history(path, {**last, expdir.AVERAGED_KEY: epochs, "averaged_valid_UA": scores["UA"],
                                        "averaged_valid_WA": scores["WA"]})
        self.checkpointer.save_checkpoint(meta={"UA": scores["UA"], "WA": scores["WA"], **others, "epoch": max(epochs),
                                                expdir.AVERAGED_KEY: epochs})

    def _end_of_test(self, test_loss: float) -> None:
        scores, others = self._scores()
        results = self.results
        primary = results.kept[self.targets.primary.name]  # the core columns: reference and posteriors
        if distributed.is_main():
            expdir.write_predictions(self.output_folder / expdir.PREDICTIONS_FILE, results.ids, primary["refs"],
                                     primary["probs"], self.classes, self.targets.columns(results.kept))
            for name, values in self.fold_extras.items():
                expdir.write_fold_extra(self.output_folder, name, values)
        logger.info("test: %d utterances, loss %.4f, WA %.2f%% UA %.2f%%%s", len(results.ids), test_loss,
                    100 * scores["WA"], 100 * scores["UA"], _scores_text(others))
        self.test_scores = {"WA": scores["WA"], "UA": scores["UA"], **others, "loss": test_loss}

    # --------------------------------------------------------------------- several processes (DDP)
    # Under torchrun every process runs this loop on its share of each global batch (the sampler's
    # strided shares). The methods below make the processes together compute what one process
    # computes on the whole global batch: the same gradient (up to float summation order), the same
    # reported losses and the metrics of the whole sets. In a single process they change nothing.

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """Leave serkit's batch sampler as it is: it already yields this process's share.

        SpeechBrain would wrap it in a ``DistributedSamplerWrapper``, which deals *whole* batches to
        the processes in an order of its own and repeats batches to even out their number: global
        steps would then no longer be the one-process run's batches.
        """
        if isinstance(loader_kwargs.get("batch_sampler"), DurationBucketBatchSampler):
            return loader_kwargs
        return super()._train_loader_specifics(dataset, loader_kwargs)

    def _wrap_distributed(self) -> None:
        """DDP as SpeechBrain wraps it, but without converting batch norm, and finding unused parameters.

        - SpeechBrain turns every batch norm into ``SyncBatchNorm``; that drops a subclass's own
          forward (TIM-Net's masked batch norm, whose statistics skip padded frames) and works on
          GPUs only. Batch norm therefore normalises over each process's share of the batch.
        - Parts of a network may sit out a step: the encoder while ``freeze_encoder_steps`` holds
          it, layers that wav2vec 2.0's LayerDrop skips. DDP must look for unused parameters or it
          waits for their gradients forever.
        """
        if not self.distributed_launch:
            return super()._wrap_distributed()
        device_ids = [self.device] if str(self.device).startswith("cuda") else None
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = DistributedDataParallel(module, device_ids=device_ids,
                                                             find_unused_parameters=True)

    def shard_weight(self, batch) -> float:
        """``world_size * n_local / n_global`` for this process's ``n_local`` of the global batch's utterances.

        Each process's loss is a mean over its own share, and DDP averages the processes'
        gradients; with this weight on each loss the average is the gradient of the mean over the
        whole global batch, also when the shares differ in size. Exact for losses that are means
        over utterances (cross-entropy; CTC, which averages over utterances *with* tokens, when
        every utterance has some). 1.0 in a single process.
        """
        world = distributed.world_size()
        if world == 1:
            return 1.0
        n_local = len(batch.id)
        n_global = distributed.all_sum([n_local], self.device)[0]
        return world * n_local / n_global

    def evaluate_batch(self, batch, stage):
        """SpeechBrain's evaluation step; the loss it reports is the global batch's."""
        return self._global_loss(super().evaluate_batch(batch, stage))

    def _global_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """The mean over processes of their weighted losses, i.e. the global batch's loss."""
        world = distributed.world_size()
        if world == 1:
            return loss
        return torch.tensor(distributed.all_sum([float(loss)], self.device)[0] / world)

    def combine_results(self, stage) -> None:
        """Make every process hold the whole stage's results: the loss parts of the global batches
        and, outside training, the predictions of every process's share of the set (so every
        target's scores are over the whole set, the same on every process)."""
        world = distributed.world_size()
        if world == 1:
            return
        results = self.results
        parts = results.summed_parts()
        names = list(parts)
        sums = distributed.all_sum([parts[name] for name in names], self.device)
        combined = StageResults(loss_parts={name: total / world for name, total in zip(names, sums)},
                                n_batches=results.n_batches)
        if stage != sb.Stage.TRAIN:
            for share in distributed.all_gather(results):
                combined.add(share.ids, share.kept)
        self.results = combined


def nonfinite_inputs(batch) -> list[str]:
    """The ids of the batch's utterances whose (unpadded) inputs hold NaN or infinite values."""
    poisoned = set()
    for inputs, lengths in zip(*batch_inputs(batch)):
        sizes = torch.round(lengths.float().cpu() * inputs.shape[1]).long()
        poisoned.update(utt for utt, x, n in zip(batch.id, inputs, sizes) if not torch.isfinite(x[:int(n)]).all())
    return [utt for utt in batch.id if utt in poisoned]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _scores_text(scores: dict[str, float | None]) -> str:
    """`` PER 41.20%`` for the secondary targets' scores of a log line."""
    return "".join(f" {name} {_pct(value)}" for name, value in scores.items())


def _parts_text(parts: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4f}" for name, value in parts.items())


def positive_count(hparams: dict, name: str, unit: str) -> int | None:
    """The config's option ``name``: a positive whole number of ``unit``, or None (null or absent: off)."""
    value = hparams.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TrainError(f"{name} must be a positive number of {unit} or null (off), got {value!r}")
    return value


def early_stop_patience(hparams: dict) -> int | None:
    """The config's ``patience`` (epochs without a better validation UA before training stops), None = off."""
    return positive_count(hparams, "patience", "epochs")


def average_nbest_setting(hparams: dict) -> int | None:
    """The config's ``average_nbest`` (how many best checkpoints to average); None = off (1 also: the best alone)."""
    value = positive_count(hparams, "average_nbest", "checkpoints")
    return value if value is not None and value > 1 else None


def improvement_state(valid_uas: dict[int, float]) -> tuple[int | None, int]:
    """(best epoch, epochs since it) over the epochs so far; only a strictly higher UA is better,
    so a tie does not reset the count."""
    best_epoch, best = None, -math.inf
    for epoch in sorted(valid_uas):
        if valid_uas[epoch] > best:
            best_epoch, best = epoch, valid_uas[epoch]
    return best_epoch, (max(valid_uas) - best_epoch if valid_uas else 0)


def patient_epochs(counter, brain: SERBrain):
    """The epoch counter's epochs until ``brain`` says patience has run out.

    Checked before the counter advances, so a run resumed after the stopping epoch trains nothing more.
    """
    while not brain.should_stop():
        try:
            epoch = next(counter)
        except StopIteration:
            return
        yield epoch


def best_checkpoint(checkpointer: Checkpointer):
    """The checkpoint with the highest validation UA; ties go to the newest (:func:`serkit.training.expdir.best_key`)."""
    best = checkpointer.find_checkpoint(importance_key=lambda ckpt: expdir.best_key(ckpt.meta),
                                        ckpt_predicate=lambda ckpt: ckpt.meta.get("UA") is not None)
    if best is None:
        raise TrainError(f"{checkpointer.checkpoints_dir}: no end-of-epoch checkpoint with a validation UA; "
                         "train for at least one epoch (number_of_epochs >= 1) before scoring the test fold")
    return best


# ----------------------------------------------------------------------------- one fold, start to end


def precision_run_opts(hparams: dict, run_opts: RunOptions | dict | None) -> tuple[RunOptions, dict]:
    """Run options with ``precision`` / ``eval_precision`` resolved for the device (:mod:`serkit.training.precision`).

    ``auto`` becomes bf16 where the device has bf16 units and fp32 elsewhere; fp16 on a CPU becomes
    fp32 (SpeechBrain refuses it there). Also returns what was chosen and why, for the log and
    ``model_config.json`` (RESULTS.md reports it).
    """
    if run_opts is None:
        run_opts = RunOptions()
    elif isinstance(run_opts, dict):
        run_opts = RunOptions.from_dictionary(run_opts)
    device = str(run_opts.device or hparams.get("device") or infer_device())
    wanted = {key: (run_opts[key] if key in run_opts.overridden_args else hparams.get(key, "fp32"))
              for key in ("precision", "eval_precision")}
    try:
        chosen = {key: resolve_precision(value, device) for key, value in wanted.items()}
    except PrecisionError as error:
        raise TrainError(f"{error} (the config's or command line's precision / eval_precision)") from None
    run_opts = dataclasses.replace(run_opts, precision=chosen["precision"].name,
                                   eval_precision=chosen["eval_precision"].name,
                                   overridden_args=set(run_opts.overridden_args) | {"precision", "eval_precision"})
    info = {"device": device, "train": chosen["precision"].name, "train_reason": chosen["precision"].reason,
            "eval": chosen["eval_precision"].name, "eval_reason": chosen["eval_precision"].reason}
    logger.info("precision on %s: training %s (%s), evaluation %s (%s)", device, info["train"], info["train_reason"],
                info["eval"], info["eval_reason"])
    return run_opts, info


def _loader(brain: SERBrain, dataset, stage, hparams: dict, shuffle: bool, generator: torch.Generator | None = None):
    sampler = shared_sampler(dataset, stage, hparams, shuffle)
    # Only the training loader is checkpointed (its position within an epoch). Its worker seeds come
    # from its own ``generator`` (saved in checkpoints), not from the global torch generator that
    # dropout draws from, so starting a loader never shifts the dropout masks of a resumed run.
    loader = brain.make_dataloader(dataset, stage, ckpt_prefix="dataloader-" if stage == sb.Stage.TRAIN else None,
                                   batch_sampler=sampler, collate_fn=dataset.collate,
                                   num_workers=int(hparams.get("num_workers", 0)), generator=generator)
    return loader, sampler


# ----------------------------------------------------------------------------- what a checkpoint holds


def make_checkpointer(out: Path, model: SERModel, hparams: dict) -> SafeCheckpointer:
    """The fold's checkpointer (atomic saves, resume from the newest intact checkpoint)."""
    return SafeCheckpointer(out / expdir.SAVE_DIR, recoverables={"model": model, "counter": hparams["epoch_counter"]})


def register_resume_state(checkpointer: SafeCheckpointer, sampler: DurationBucketBatchSampler,
                          loader_generator: torch.Generator) -> None:
    """Add to every checkpoint what an exact resume needs beyond model, optimizers and counters.

    ``rng.ckpt``: the random states (:class:`serkit.training.checkpoints.RandomStates`, including the training
    loader's generator). ``sampler.ckpt``: the training batches' seed, batch size, seconds budget and
    utterance count; resuming with different ones would silently train on other batches, so it is refused.
    """
    RandomStates({"train_loader": loader_generator}).register(checkpointer)
    saved_by = {"seed": sampler.seed, "batch_size": sampler.batch_size, "batch_seconds": sampler.batch_seconds,
                "n_utterances": len(sampler.durations)}

    def check(saved: dict) -> None:
        changed = [f"{key} {saved.get(key)} -> {value}" for key, value in saved_by.items() if saved.get(key) != value]
        if changed:
            raise TrainError(f"{checkpointer.checkpoints_dir}: the checkpoints were trained with other batches "
                             f"({'; '.join(changed)}); resuming would not continue that run. Use the original "
                             "settings, or a new output folder to train afresh")
    JsonState(lambda: dict(saved_by), check).register(checkpointer, "sampler")


def shared_sampler(dataset, stage, hparams: dict, shuffle: bool) -> DurationBucketBatchSampler:
    """The set's duration-bucketed batches; under DDP this process's share of each (same batches on every process)."""
    try:
        budget = check_batch_seconds(hparams.get("batch_seconds"))
    except ValueError as error:
        raise TrainError(str(error)) from None
    try:
        return DurationBucketBatchSampler(dataset.durations, int(hparams["batch_size"]), batch_seconds=budget,
                                          shuffle=shuffle, seed=int(hparams["seed"]), dataset=dataset,
                                          num_replicas=distributed.world_size(), rank=distributed.rank())
    except ValueError as error:
        split = stage.name.lower()
        raise TrainError(f"{Path(hparams['fold_dir']) / split}: {error}; change batch_size or the number of "
                         "processes (--ngpu)") from None


def load_data(hparams: dict, family: ModelFamily, targets: TargetSet):
    """The fold's datasets with the inputs the family consumes and the fields its targets need."""
    inputs = family.inputs(hparams)
    ambiguous = bool(hparams.get("use_ambiguous", False))
    if ambiguous and (family.trainer != "brain" or hparams.get("normalisation") == "speaker"):
        raise TrainError(f"use_ambiguous: True trains the ambiguous utterances on soft targets, which family "
                         f"{family.name} ({family.trainer}) with normalisation {hparams.get('normalisation')} cannot; "
                         "set use_ambiguous: False (or normalisation: global)")
    data = load_fold_data(hparams["data_dir"], hparams["fold_dir"], targets,
                          sample_rate=int(hparams["sample_rate"]), max_duration=hparams.get("max_duration"),
                          features=[feature_from_dict(feature) for feature in inputs],
                          cache_dir=hparams.get("feature_cache"), ambiguous=ambiguous)
    check_class_coverage(data, hparams["fold_dir"], bool(hparams.get("allow_missing_classes", False)))
    check_fold_audio(data, hparams["data_dir"])
    normalisation = check_normalisation(hparams.get("normalisation"), inputs[0]["kind"])
    augmenter = make_augmenter(hparams, [feature["kind"] for feature in inputs]) if family.trainer == "brain" else None
    if len(inputs) > 1 and normalisation == "speaker":
        raise TrainError(f"family {family.name} has {len(inputs)} inputs: per-speaker normalisation applies to "
                         "one input, as an export's speaker statistics do; set normalisation: global")
    if normalisation == "speaker":
        normalise_per_speaker({"train": data.train, "valid": data.valid, "test": data.test}, hparams["data_dir"])
    data.train.augmenter = augmenter  # the training set only (serkit.features.augment); fitted families are not augmented
    if hparams.get("balance"):  # class-balanced segments of the training set only (serkit.data.segments)
        try:
            balance_training_set(data.train, hparams.get("balance_segments") or PAPER_SETTINGS, data.classes)
        except SegmentSettingsError as error:
            raise TrainError(f"{hparams['fold_dir']}: {error}") from None
    return data, inputs


def input_dims(dataset) -> list[tuple[int, ...]]:
    """Each model input's dimensions after time (e.g. (3, 64) for log-Mel with deltas; () for waveforms)."""
    return [tuple(dataset.inputs(0, which=which).shape[1:]) for which in range(len(dataset.features))]


def training_stats(dataset) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-dimension mean and std of each training input over all its frames (CMVN statistics)."""
    stats = [FeatureStats() for _ in dataset.features]
    for index in tqdm(range(len(dataset)), desc="input statistics (train)", unit="utt", disable=None):
        for which, input_stats in enumerate(stats):
            input_stats.accumulate(dataset.inputs(index, which=which))
    for cache in filter(None, dataset.caches):
        logger.info("feature cache %s: %d utterances reused, %d computed", cache.dir, cache.hits, cache.computed)
    return [(input_stats.mean.float(), input_stats.std.float()) for input_stats in stats]


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


#: What a closed-form fit (``trainer = "fit"``) computes in: scikit-learn's float64 on the CPU.
FIT_PRECISION = {"train": "fp64", "train_reason": "closed-form fit (scikit-learn, float64)",
                 "eval": "fp64", "eval_reason": "the fitted model's float64 posteriors"}


def record_provenance(out: Path, family: ModelFamily, device: str, precision: dict,
                      invocation: dict | None) -> None:
    """Add this run to the fold's ``provenance.json`` (rank 0 only), before anything is trained."""
    if distributed.is_main():
        expdir.write_provenance(out, provenance.training_run(
            family=family.name, device=device, precision=precision, processes=distributed.world_size(),
            invocation=invocation))


def fit_fold(family: ModelFamily, hparams: dict, data, inputs: list[dict], dims: list[tuple[int, ...]],
             out: Path) -> dict:
    """A closed-form family's fold (``trainer = "fit"``), written as a trained one's: model config, one
    history record, one checkpoint through the same safe checkpointer, test predictions. Returns the test scores."""
    fitted = family.fit(hparams, data)
    expdir.write_model_config(out, model_config(family, fitted.model, hparams, inputs, dims, data.classes))
    expdir.write_history(out / expdir.HISTORY_FILE, {"epoch": 1, **fitted.valid, **fitted.details})
    checkpointer = SafeCheckpointer(out / expdir.SAVE_DIR, recoverables={"model": fitted.model})
    checkpointer.save_checkpoint(meta={"UA": fitted.valid["valid_UA"], "WA": fitted.valid["valid_WA"], "epoch": 1})
    refs = [utt.emotion for utt in data.test.utterances]
    expdir.write_predictions(out / expdir.PREDICTIONS_FILE, [utt.utt_id for utt in data.test.utterances], refs,
                             fitted.test_probs.tolist(), data.classes)
    test = classification_scores(refs, fitted.test_probs.argmax(axis=1), len(data.classes))
    logger.info("test WA %.2f%% UA %.2f%%", 100 * test["WA"], 100 * test["UA"])
    return {"WA": test["WA"], "UA": test["UA"], "PER": None, "loss": None}


def train_fold(hparams: dict, run_opts: RunOptions | dict | None = None, invocation: dict | None = None) -> dict:
    """Train, select and test one fold as ``hparams`` (a loaded conf/<family>.yaml) describes.

    Returns the test scores ``{WA, UA, PER, loss}``. Writes into ``hparams["output_folder"]`` the
    files listed in docs/formats.md. A folder that already has ``train.done`` raises
    :class:`TrainError` (``python -m serkit.bin.train`` checks first and skips such folds).
    ``invocation`` (command, config, overrides, resolved config; :func:`serkit.training.provenance.training_run`)
    goes into ``provenance.json`` with the environment, for every family.
    """
    out = Path(hparams["output_folder"])
    if expdir.is_done(out):
        raise TrainError(f"{out / expdir.DONE_FILE}: this fold is already trained; remove the file to train it again")
    out.mkdir(parents=True, exist_ok=True)
    family = get_family(hparams["model"])
    try:
        targets = TargetSet.from_config(hparams)
        targets.check_family(family)
    except TargetError as error:
        raise TrainError(str(error)) from None
    data, inputs = load_data(hparams, family, targets)
    dims = input_dims(data.train)
    if family.trainer == "fit":  # closed form: one process fits, any others wait for its scores
        record_provenance(out, family, "cpu", FIT_PRECISION, invocation)
        scores = run_on_main(fit_fold, args=[family, hparams, data, inputs, dims, out])
        if distributed.is_main():
            expdir.mark_done(out, scores)
        return scores

    model = build_model(family, hparams, input_dims=dims, **targets.head_sizes())
    if model.input_norm is not None:  # rank 0 computes (and caches) the statistics; the others receive them
        for norm, stats in zip(model.input_norm, run_on_main(training_stats, args=[data.train])):
            norm.set_stats(*stats)
    run_opts, precision = precision_run_opts(hparams, run_opts)
    record_provenance(out, family, precision["device"],
                      {key: value for key, value in precision.items() if key != "device"}, invocation)
    if distributed.is_main():
        config = model_config(family, model, hparams, inputs, dims, **targets.inventories())
        expdir.write_model_config(out, {**config, "precision": precision})
    total, trainable = count_parameters(model)
    logger.info("model %s: %s parameters (%s trainable)", family.name, f"{total:,}", f"{trainable:,}")

    checkpointer = make_checkpointer(out, model, hparams)
    brain = SERBrain(modules={"model": model}, hparams=hparams, run_opts=run_opts,
                     checkpointer=checkpointer, family=family, targets=targets)
    loader_generator = torch.Generator().manual_seed(int(hparams["seed"]))
    train_loader, train_sampler = _loader(brain, data.train, sb.Stage.TRAIN, hparams, shuffle=True,
                                          generator=loader_generator)
    brain.train_sampler = train_sampler  # Brain calls set_epoch(epoch) on it before every epoch
    register_resume_state(checkpointer, train_sampler, loader_generator)
    valid_loader, _ = _loader(brain, data.valid, sb.Stage.VALID, hparams, shuffle=False)
    early_stop_patience(hparams)  # bad values fail before training, not after it
    average_nbest_setting(hparams)
    brain.fit(patient_epochs(hparams["epoch_counter"], brain), train_loader, valid_loader)
    if average_nbest_setting(hparams):
        brain.average_best(average_nbest_setting(hparams), valid_loader)

    test_loader, _ = _loader(brain, data.test, sb.Stage.TEST, hparams, shuffle=False)
    brain.evaluate(test_loader)
    if distributed.is_main():
        expdir.mark_done(out, brain.test_scores)
    return brain.test_scores
