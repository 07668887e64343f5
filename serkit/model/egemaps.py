"""The classical floor: openSMILE eGeMAPSv02 functionals + a scikit-learn classifier.

Every comparison table shows this model beside the neural ones, so a user sees at once whether a
network beats a baseline that trains in seconds (Eyben et al. 2016 define the 88 eGeMAPS
functionals; Schuller et al.'s challenge baselines pair such functionals with an SVM).

The functionals themselves come from the feature layer (:func:`serkit.features.egemaps_functionals`,
cached per utterance by the data layer like any feature). Here:

* :func:`fit_floor` standardises with training statistics, fits the classifier for every point of a
  grid, and keeps the one with the best *validation* UA (the test set is never looked at).
* :class:`FloorNet` holds the fitted model as plain tensors (no pickle): scikit-learn is needed to fit,
  never to predict. :class:`FloorModel` is its numpy-facing wrapper with the selection log.

Two classifiers give real posteriors in plain tensors:

* ``logreg`` (multinomial logistic regression): posteriors = softmax(x_std @ W.T + b).
* ``rbf_svm`` (SVC with an RBF kernel and Platt scaling): pairwise decision values from the support
  vectors, Platt's sigmoid per class pair, then the pairwise coupling of Wu, Lin and Weng (2004),
  computed the way libsvm does, so the posteriors equal scikit-learn's ``predict_proba``.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from serkit.data.datadir import read_map
from serkit.errors import SerkitError
from serkit.features import N_FUNCTIONALS
from serkit.scoring.metrics import classification_scores
from serkit.model.family import FitResult, ModelFamily
from serkit.model.ser_model import NetworkOutput, SERModel

logger = logging.getLogger(__name__)

FEATURE_SET = "eGeMAPSv02"
SAMPLE_RATE = 16000
CLASSIFIERS = ("logreg", "rbf_svm")
# libsvm clips each pairwise probability into [MIN_PROB, 1 - MIN_PROB] before coupling.
_MIN_PROB = 1e-7


class FloorError(SerkitError):
    """The floor classifier cannot be fitted or rebuilt from the given data."""


def _pairwise_coupling(pairwise: torch.Tensor, max_iter: int | None = None) -> torch.Tensor:
    """Class posteriors [B, K] from pairwise probabilities ``r[b, i, j] = P(i | i or j)``.

    The iterative method 2 of Wu, Lin and Weng (2004), step for step as libsvm's
    ``multiclass_probability`` (same start, update order, renormalisation and stopping rule), so the
    result matches scikit-learn's ``SVC.predict_proba``. Rows stop independently, as they would one
    by one.
    """
    batch, k = pairwise.shape[0], pairwise.shape[1]
    max_iter = max(100, k) if max_iter is None else max_iter
    eps = 0.005 / k
    r_sq = pairwise.transpose(1, 2) ** 2                     # r_sq[b, t, j] = r[j, t]^2
    q = -pairwise.transpose(1, 2) * pairwise                 # q[b, t, j] = -r[j, t] * r[t, j]
    eye = torch.eye(k, dtype=torch.bool, device=pairwise.device)
    q = torch.where(eye, (r_sq * ~eye).sum(dim=2, keepdim=True).expand(-1, -1, k), q)
    p = torch.full((batch, k), 1.0 / k, dtype=pairwise.dtype, device=pairwise.device)
    active = torch.ones(batch, dtype=torch.bool, device=pairwise.device)
    for _ in range(max_iter):
        qp = torch.einsum("btj,bj->bt", q, p)
        pqp = (p * qp).sum(dim=1)
        active = active & ((qp - pqp[:, None]).abs().amax(dim=1) >= eps)
        if not active.any():
            break
        for t in range(k):
            q_tt = q[:, t, t]
            diff = (pqp - qp[:, t]) / q_tt
            diff = torch.where(active, diff, torch.zeros_like(diff))
            p = p.clone()
            p[:, t] = p[:, t] + diff
            pqp = (pqp + diff * (diff * q_tt + 2 * qp[:, t])) / (1 + diff) / (1 + diff)
            qp = (qp + diff[:, None] * q[:, t, :]) / (1 + diff)[:, None]
            p = p / (1 + diff)[:, None]
    return p


class FloorNet(nn.Module):
    """The fitted floor model as a torch module of plain float64 buffers.

    ``forward(functionals [B, 88]) -> logits [B, K]``: for ``logreg`` the linear scores whose softmax is
    the posterior; for ``rbf_svm`` the log of the coupled posteriors (so softmax gives them back, up to
    rounding). :meth:`posteriors` returns the posteriors themselves. The state_dict holds everything,
    so export and inference need neither pickle nor scikit-learn.
    """

    BUFFERS = {"logreg": ("mean", "scale", "weight", "bias"),
               "rbf_svm": ("mean", "scale", "support_vectors", "dual_coef", "intercept", "n_support",
                           "prob_a", "prob_b", "gamma")}

    def __init__(self, classifier: str, n_classes: int, tensors: Mapping[str, torch.Tensor]):
        super().__init__()
        if classifier not in self.BUFFERS:
            raise FloorError(f"unknown floor classifier {classifier!r}; choose one of {CLASSIFIERS}")
        missing = [name for name in self.BUFFERS[classifier] if name not in tensors]
        if missing:
            raise FloorError(f"floor model ({classifier}) lacks tensors {missing}; re-export the model")
        self.classifier, self.n_classes = classifier, int(n_classes)
        for name in self.BUFFERS[classifier]:
            tensor = torch.as_tensor(tensors[name])
            self.register_buffer(name, tensor.to(torch.int64 if name == "n_support" else torch.float64).clone())

    def standardise(self, functionals: torch.Tensor) -> torch.Tensor:
        return (functionals.to(torch.float64) - self.mean) / self.scale

    def forward(self, functionals: torch.Tensor) -> torch.Tensor:
        if self.classifier == "logreg":
            return self.standardise(functionals) @ self.weight.T + self.bias
        return torch.log(self.posteriors(functionals))

    def posteriors(self, functionals: torch.Tensor) -> torch.Tensor:
        """Class posteriors [B, K] (float64), equal to scikit-learn's ``predict_proba``."""
        if self.classifier == "logreg":
            return torch.softmax(self.forward(functionals), dim=1)
        return self._svm_posteriors(self.standardise(functionals))

    def _svm_decisions(self, x: torch.Tensor) -> torch.Tensor:
        """libsvm's one-vs-one decision values [B, K(K-1)/2], pairs in (0,1), (0,2), ... order."""
        # Direct differences, not the |x|^2 + |y|^2 - 2xy shortcut, which loses digits to cancellation.
        distance = torch.cdist(x, self.support_vectors, compute_mode="donot_use_mm_for_euclid_dist")
        kernel = torch.exp(-self.gamma * distance.pow(2))   # [B, n_sv]
        bounds = torch.cumsum(torch.cat([self.n_support.new_zeros(1), self.n_support]), 0).tolist()
        columns, pair = [], 0
        for i in range(self.n_classes):
            for j in range(i + 1, self.n_classes):
                # Class i's vectors carry their coefficient against j in row j-1, class j's against i in row i.
                part_i = kernel[:, bounds[i]:bounds[i + 1]] @ self.dual_coef[j - 1, bounds[i]:bounds[i + 1]]
                part_j = kernel[:, bounds[j]:bounds[j + 1]] @ self.dual_coef[i, bounds[j]:bounds[j + 1]]
                columns.append(part_i + part_j + self.intercept[pair])
                pair += 1
        return torch.stack(columns, dim=1)

    def _svm_posteriors(self, x: torch.Tensor) -> torch.Tensor:
        decision = self._svm_decisions(x)
        f_ab = decision * self.prob_a + self.prob_b
        # Platt's sigmoid 1 / (1 + exp(fApB)), written as libsvm does for numerical safety on each side.
        sigmoid = torch.where(f_ab >= 0, torch.exp(-f_ab.abs()) / (1 + torch.exp(-f_ab.abs())),
                              1 / (1 + torch.exp(f_ab.clamp(max=0))))
        sigmoid = sigmoid.clamp(_MIN_PROB, 1 - _MIN_PROB)
        k = self.n_classes
        pairwise = decision.new_zeros(decision.shape[0], k, k)
        upper = torch.triu_indices(k, k, offset=1)
        pairwise[:, upper[0], upper[1]] = sigmoid
        pairwise[:, upper[1], upper[0]] = 1 - sigmoid
        return _pairwise_coupling(pairwise)


# ---------------------------------------------------------------------------------------------
# Fitting with selection on the validation set
# ---------------------------------------------------------------------------------------------

@dataclass
class FloorModel:
    """A fitted floor model: the :class:`FloorNet`, its hyper-parameters and the selection log."""

    net: FloorNet
    hyper: dict
    selection_log: list[dict] = field(default_factory=list)
    selection_score: float = float("nan")  # the chosen point's validation or cross-validated UA

    @property
    def classifier(self) -> str:
        return self.net.classifier

    def predict_proba(self, functionals: np.ndarray) -> np.ndarray:
        """Posteriors [N, K] (float64) for functionals [N, 88]."""
        with torch.no_grad():
            return self.net.posteriors(torch.as_tensor(np.asarray(functionals, dtype=np.float64))).numpy()

    def predict(self, functionals: np.ndarray) -> np.ndarray:
        return self.predict_proba(functionals).argmax(axis=1)

    def to_plain(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON-able config, tensors) that :meth:`from_plain` turns back into the same model."""
        config = {"family": "egemaps", "feature_set": FEATURE_SET, "n_features": N_FUNCTIONALS,
                  "classifier": self.classifier, "n_classes": self.net.n_classes, "hyper": dict(self.hyper)}
        tensors = {name: buffer.detach().clone() for name, buffer in self.net.state_dict().items()}
        return config, tensors

    @classmethod
    def from_plain(cls, config: Mapping, tensors: Mapping[str, torch.Tensor]) -> "FloorModel":
        if config.get("feature_set") != FEATURE_SET:
            raise FloorError(f"floor model was fitted on feature set {config.get('feature_set')!r}, "
                             f"this serkit computes {FEATURE_SET!r}; re-train it")
        net = FloorNet(config["classifier"], config["n_classes"], tensors)
        return cls(net=net, hyper=dict(config.get("hyper", {})))


def default_grid(classifier: str, n_features: int = N_FUNCTIONALS) -> list[dict]:
    """The hyper-parameter points tried, smallest C first (ties go to the earlier point).

    ``logreg``: C over 1e-3 .. 1e2. ``rbf_svm``: C over 0.1 .. 100 times gamma at 1/4, 1 and 4 times
    scikit-learn's 'scale' value, which is 1 / n_features on standardised input.
    """
    if classifier == "logreg":
        return [{"C": c} for c in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)]
    if classifier == "rbf_svm":
        return [{"C": c, "gamma": f / n_features} for c in (0.1, 1.0, 10.0, 100.0) for f in (0.25, 1.0, 4.0)]
    raise FloorError(f"unknown floor classifier {classifier!r}; choose one of {CLASSIFIERS}")


def standardisation(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of the training functionals; a constant feature gets scale 1 (it stays 0)."""
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean, scale


def _check_inputs(x: np.ndarray, y: np.ndarray, n_classes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise FloorError(f"{name}: expected functionals [N, F] and N labels, got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise FloorError(f"{name}: functionals contain NaN or inf; recompute the features")
    if y.min() < 0 or y.max() >= n_classes:
        raise FloorError(f"{name}: labels must lie in 0..{n_classes - 1}")
    return x, y


def _fit_point(x_std: np.ndarray, y: np.ndarray, classifier: str, point: dict, class_weight, seed: int):
    """Fit scikit-learn's model at one grid point; return its plain tensors."""
    if classifier == "logreg":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=point["C"], class_weight=class_weight, max_iter=5000, tol=1e-6,
                                   random_state=seed).fit(x_std, y)
        weight, bias = model.coef_, model.intercept_
        if weight.shape[0] == 1:  # two classes: sigmoid(z) == softmax([0, z])[1]
            weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])
        return {"weight": torch.from_numpy(weight.copy()), "bias": torch.from_numpy(bias.copy())}, model
    from sklearn.svm import SVC

    with warnings.catch_warnings():
        # scikit-learn 1.9 deprecates SVC(probability=True) and probA_/probB_ (removal planned for 1.11);
        # until then they are the only way to libsvm's Platt scaling, which FloorNet reproduces.
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*(probability|probA_|probB_).*")
        try:
            model = SVC(C=point["C"], kernel="rbf", gamma=point["gamma"], probability=True,
                        class_weight=class_weight, random_state=seed).fit(x_std, y)
            prob_a, prob_b = model.probA_, model.probB_
        except (TypeError, AttributeError) as error:
            raise FloorError(f"rbf_svm needs SVC(probability=True), which this scikit-learn lacks ({error}); "
                             f"use classifier 'logreg' or install scikit-learn<1.11") from None
    dual_coef, intercept = model.dual_coef_, model.intercept_
    if len(model.classes_) == 2:  # scikit-learn flips the binary signs; libsvm's probA/B expect the originals
        dual_coef, intercept = -dual_coef, -intercept
    return {"support_vectors": torch.from_numpy(model.support_vectors_.copy()),
            "dual_coef": torch.from_numpy(np.array(dual_coef)), "intercept": torch.from_numpy(np.array(intercept)),
            "n_support": torch.from_numpy(model.n_support_.astype(np.int64)),
            "prob_a": torch.from_numpy(prob_a.copy()), "prob_b": torch.from_numpy(prob_b.copy()),
            "gamma": torch.tensor(float(point["gamma"]), dtype=torch.float64)}, model


SELECTIONS = ("cv", "valid")


def _predict_point(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, classifier: str, point: dict,
                   class_weight, seed: int) -> np.ndarray:
    """Hard predictions of one grid point fitted on ``x_fit`` (standardised with its own statistics).

    Selection only needs labels, so the SVM skips Platt scaling here (five times cheaper) and
    predicts by libsvm's one-vs-one vote, the decision the final posteriors agree with but for ties.
    """
    mean, scale = standardisation(x_fit)
    if classifier == "logreg":
        _, model = _fit_point((x_fit - mean) / scale, y_fit, classifier, point, class_weight, seed)
    else:
        from sklearn.svm import SVC

        model = SVC(C=point["C"], kernel="rbf", gamma=point["gamma"], class_weight=class_weight,
                    random_state=seed).fit((x_fit - mean) / scale, y_fit)
    return model.predict((x_eval - mean) / scale)


def _cv_scores(x: np.ndarray, y: np.ndarray, speakers: Sequence[str] | None, n_classes: int, classifier: str,
               grid: Sequence[dict], class_weight, seed: int, n_splits: int) -> list[float]:
    """Pooled UA of each grid point over a cross-validation of ``x`` that mirrors the test condition.

    With ``speakers`` the parts are speaker-grouped (every speaker held out once): the choice then
    rests on all training and validation speakers rather than on the one or two a fold keeps for
    validation, and it favours what generalises to unseen voices. Without them (a speaker-dependent
    protocol, whose test speakers are also in training) the parts are utterance-level and stratified
    by class, because there a more flexible model that fits the known voices is the right choice.
    UA is pooled over the held-out predictions (a speaker-grouped part cannot hold every class).
    """
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if speakers is not None:
        n_splits = min(n_splits, len(set(speakers)))
        if n_splits < 2:
            raise FloorError("cv selection on speaker-independent folds needs at least two speakers in training + "
                             "validation; set 'selection: valid' in the floor's config")
        splits = list(GroupKFold(n_splits=n_splits).split(x, y, np.asarray(speakers)))
    else:
        n_splits = min(n_splits, int(np.bincount(y).max()))
        splits = list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y))
    scores = []
    for point in grid:
        predicted = np.empty_like(y)
        for fit_rows, held_rows in splits:
            predicted[held_rows] = _predict_point(x[fit_rows], y[fit_rows], x[held_rows], classifier, point,
                                                  class_weight, seed)
        scores.append(classification_scores(y, predicted, n_classes)["UA"])
    return scores


def _valid_scores(x_train, y_train, x_valid, y_valid, n_classes, classifier, grid, class_weight, seed) -> list[float]:
    """Validation UA of each grid point fitted on the training set."""
    return [classification_scores(y_valid, _predict_point(x_train, y_train, x_valid, classifier, point,
                                                          class_weight, seed), n_classes)["UA"] for point in grid]


def fit_floor(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
              n_classes: int, classifier: str = "logreg", grid: Sequence[dict] | None = None,
              class_weight: str | None = "balanced", seed: int = 1, selection: str = "valid",
              speakers: Sequence[str] | None = None, refit: bool = False, cv_splits: int = 5) -> FloorModel:
    """Choose the floor's hyper-parameters without the test set, then fit the final model.

    ``selection='valid'`` scores every grid point, fitted on the training set, on the validation
    set. ``selection='cv'`` pools training and validation and scores each point by a
    cross-validation: speaker-grouped when ``speakers`` names the speaker of every training row, then
    every validation row (speaker-independent folds: a fold's one or two validation speakers make a
    noisy judge, and the point they pick often suits only them), utterance-level otherwise. The best UA wins; ties
    go to the earlier (smaller-C) point, the simpler model being the safer bet.

    ``refit=True`` fits the chosen point on training + validation, as a plain recipe would train on
    every non-test speaker; otherwise on the training set alone, like a neural model's best
    checkpoint. Standardisation statistics come from the same rows as the final fit. Deterministic
    for a seed. ``class_weight='balanced'`` weights classes inversely to their frequency, which
    suits UA.

    ``logreg`` gives posteriors by one softmax and uses no deprecated API; ``rbf_svm`` relies on
    ``SVC(probability=True)`` (Platt scaling), deprecated in scikit-learn 1.9.
    """
    if classifier not in CLASSIFIERS:
        raise FloorError(f"unknown floor classifier {classifier!r}; choose one of {CLASSIFIERS}")
    if selection not in SELECTIONS:
        raise FloorError(f"unknown floor selection {selection!r}; choose one of {SELECTIONS}")
    x_train, y_train = _check_inputs(x_train, y_train, n_classes, "training set")
    x_valid, y_valid = _check_inputs(x_valid, y_valid, n_classes, "validation set")
    absent = sorted(set(range(n_classes)) - set(y_train.tolist()))
    if absent:
        raise FloorError(f"training set has no utterance of class(es) {absent}; the floor needs every class "
                         f"in training (check the fold's class balance)")
    grid = list(grid) if grid is not None else default_grid(classifier, x_train.shape[1])
    x_all, y_all = np.vstack([x_train, x_valid]), np.concatenate([y_train, y_valid])
    if selection == "cv":
        if speakers is not None and len(speakers) != len(y_all):
            raise FloorError("cv selection needs the speaker of every training and validation row")
        scores = _cv_scores(x_all, y_all, speakers, n_classes, classifier, grid, class_weight, seed,
                                    cv_splits)
    elif len(grid) > 1:
        scores = _valid_scores(x_train, y_train, x_valid, y_valid, n_classes, classifier, grid, class_weight, seed)
    else:
        scores = [float("nan")]  # one point: nothing to choose
    best = int(np.argmax(np.nan_to_num(scores, nan=-1.0)))  # first maximum: ties go to the earlier point
    score_key = "cv_UA" if selection == "cv" else "valid_UA"
    log = [{**point, score_key: score} for point, score in zip(grid, scores)]
    for row in log:
        logger.info("floor %s %s", classifier, row)
    x_fit, y_fit = (x_all, y_all) if refit else (x_train, y_train)
    mean, scale = standardisation(x_fit)
    params, _ = _fit_point((x_fit - mean) / scale, y_fit, classifier, grid[best], class_weight, seed)
    net = FloorNet(classifier, n_classes, {"mean": torch.from_numpy(mean), "scale": torch.from_numpy(scale), **params})
    hyper = {**grid[best], "class_weight": class_weight, "seed": seed, "selection": selection, "refit": bool(refit)}
    if selection == "cv":
        hyper["cv_parts"] = "speaker" if speakers is not None else "utterance"
    return FloorModel(net=net, hyper=hyper, selection_log=log, selection_score=scores[best])


# ---------------------------------------------------------------------------------------------
# The family
# ---------------------------------------------------------------------------------------------

class FloorNetwork(nn.Module):
    """:class:`FloorNet` behind the family contract: inputs [B, 1, 88] (one functionals row per utterance)."""

    frame_dim = None  # no frame-level outputs: the CTC head cannot be switched on

    def __init__(self, net: FloorNet):
        super().__init__()
        self.net = net

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor):
        return NetworkOutput(emo_logits=self.net(inputs[:, 0]))


def _cv_speakers(data, data_dir) -> list[str] | None:
    """The speaker of every training then validation row when the fold is speaker-independent, else None.

    A fold is speaker-dependent when a test speaker also speaks in training (a random split); the
    selection's cross-validation then splits utterances, as the test condition does.
    """
    utt2spk = read_map(Path(data_dir) / "utt2spk")
    seen = {utt2spk[u.utt_id] for u in data.train.utterances}
    if any(utt2spk[u.utt_id] in seen for u in data.test.utterances):
        return None
    return [utt2spk[u.utt_id] for u in (*data.train.utterances, *data.valid.utterances)]


def _grid_option(grid) -> list[dict] | None:
    """The config's ``grid`` (a list of {C: .., gamma: ..} points), checked; None keeps the default grid."""
    if grid is None:
        return None
    if not isinstance(grid, (list, tuple)) or not grid or not all(isinstance(p, Mapping) and "C" in p for p in grid):
        raise FloorError(f"floor option 'grid' must be a list of points like {{C: 10, gamma: 0.0114}}, got {grid!r}")
    return [{key: float(value) for key, value in point.items()} for point in grid]


def _matrix(dataset) -> tuple[np.ndarray, np.ndarray]:
    """Functionals [N, 88] (from the data layer, cached) and class indices [N] of a dataset."""
    rows = [dataset.inputs(i)[0].numpy() for i in range(len(dataset))]
    return np.stack(rows).astype(np.float64), np.array([utt.emotion for utt in dataset.utterances])


class EgemapsSVMFamily(ModelFamily):
    """eGeMAPSv02 functionals (openSMILE) + an RBF SVM (or logistic regression): the classical floor.

    Fitted in closed form (``trainer = "fit"``) on the fold's training set, its hyper-parameters chosen
    on the validation set, and scored once on the test set, through the same stages and files as
    the neural families.
    """

    name = "egemaps_svm"
    trainer = "fit"
    normalise_input = False  # the classifier standardises with training statistics itself

    def feature(self, hparams: dict) -> dict:
        return {"kind": "egemaps", "sample_rate": SAMPLE_RATE, "params": {}}

    def network_config(self, network: FloorNetwork) -> dict:
        shapes = {name: list(buffer.shape) for name, buffer in network.net.state_dict().items()}
        return {"classifier": network.net.classifier, "n_classes": network.net.n_classes, "shapes": shapes}

    def network_from_config(self, config: dict) -> FloorNetwork:
        tensors = {name: torch.zeros(shape) for name, shape in config["shapes"].items()}
        return FloorNetwork(FloorNet(config["classifier"], int(config["n_classes"]), tensors))

    def fit(self, hparams: dict, data) -> FitResult:
        """Fit on train, choose C (and gamma) on valid, give the test posteriors (the trainer writes the fold)."""
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = (_matrix(d) for d in (data.train, data.valid,
                                                                                          data.test))
        selection = str(hparams.get("selection", "valid"))
        speakers = _cv_speakers(data, hparams["data_dir"]) if selection == "cv" else None
        fitted = fit_floor(x_train, y_train, x_valid, y_valid, len(data.classes),
                           classifier=str(hparams.get("classifier", "rbf_svm")),
                           class_weight=hparams.get("class_weight", "balanced"), seed=int(hparams["seed"]),
                           selection=selection, speakers=speakers, refit=bool(hparams.get("refit", False)),
                           cv_splits=int(hparams.get("cv_splits", 5)), grid=_grid_option(hparams.get("grid")))
        valid = self._selection_scores(fitted, x_valid, y_valid, len(data.classes))
        logger.info("floor %s chosen %s: selection UA %.2f%%", fitted.classifier, fitted.hyper, 100 * valid["valid_UA"])
        return FitResult(SERModel(FloorNetwork(fitted.net)), valid, fitted.predict_proba(x_test),
                         {"chosen": fitted.hyper, "grid": fitted.selection_log})

    @staticmethod
    def _selection_scores(fitted: FloorModel, x_valid: np.ndarray, y_valid: np.ndarray, n_classes: int) -> dict:
        """The held-out figures that rank this fold's model (``valid_UA``, as a neural checkpoint's).

        A model refitted on training + validation has seen the validation set, so its own validation
        score would flatter it: then the figure is the chosen point's cross-validated (or pre-refit
        validation) UA, and ``valid_WA`` is left out rather than made up.
        """
        if not fitted.hyper.get("refit") and fitted.hyper.get("selection") == "valid":
            scores = classification_scores(y_valid, fitted.predict(x_valid), n_classes)
            return {"valid_WA": scores["WA"], "valid_UA": scores["UA"]}
        return {"valid_WA": None, "valid_UA": fitted.selection_score, "valid_UA_from": fitted.hyper["selection"]}
