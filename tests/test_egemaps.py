"""The eGeMAPS floor: functionals (feature layer) and a classifier chosen on validation and exported as tensors."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_safetensors, save as save_safetensors

from serkit import features
from serkit.features import N_FUNCTIONALS, FeatureError
from serkit.model import egemaps
from serkit.model.egemaps import FloorError, FloorModel, FloorNet, fit_floor

SR = 16000
# Four "emotions" that differ the way prosody does: pitch (Hz) and loudness (peak amplitude).
CLASS_F0 = (110.0, 160.0, 220.0, 300.0)
CLASS_AMP = (0.05, 0.4, 0.1, 0.25)


def voiced(f0: float, amplitude: float, seconds: float, rng: np.random.Generator) -> torch.Tensor:
    """A harmonic 'vowel' with a drifting pitch, a syllable-rate envelope and background noise."""
    t = np.arange(int(seconds * SR)) / SR
    contour = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(contour) / SR
    wave = sum(np.sin(h * phase) / h for h in range(1, 6))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    wave = amplitude * envelope * wave / 2 + 0.005 * rng.standard_normal(t.shape)
    return torch.from_numpy(wave.astype(np.float32))


def synthetic_set(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Functionals [N, 88] and labels of utterances whose pitch and loudness vary around their class's."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for label, (f0, amp) in enumerate(zip(CLASS_F0, CLASS_AMP)):
        for _ in range(per_class):
            wave = voiced(f0 * rng.uniform(0.85, 1.15), amp * rng.uniform(0.7, 1.3), rng.uniform(0.6, 1.0), rng)
            rows.append(extract_functionals(wave))
            labels.append(label)
    return np.stack(rows), np.array(labels)


@pytest.fixture(scope="module")
def corpus():
    """Train / valid / test functionals from disjoint random draws (computed once for the module)."""
    return {"train": synthetic_set(16, seed=1), "valid": synthetic_set(6, seed=2), "test": synthetic_set(6, seed=3)}


def extract_functionals(wave: torch.Tensor) -> np.ndarray:
    return features.egemaps_functionals(wave, SR)[0].numpy()


def test_functionals_of_a_tone_are_88_finite_and_deterministic():
    wave = voiced(200.0, 0.3, 1.0, np.random.default_rng(0))
    first = extract_functionals(wave)
    assert first.shape == (N_FUNCTIONALS,) and first.dtype == np.float64
    assert np.isfinite(first).all()
    assert np.array_equal(first, extract_functionals(wave.clone()))
    # The mean F0 functional (semitones from 27.5 Hz) sees the 200 Hz pitch: 12*log2(200/27.5) = 34.3.
    f0_mean = first[features.functional_names().index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert abs(f0_mean - 34.3) < 1.0
    spec = features.make_feature("egemaps")
    assert spec.frame_shape == (N_FUNCTIONALS,) and spec.n_frames(SR) == 1
    assert torch.equal(spec.compute(wave, SR), features.egemaps_functionals(wave, SR))


def test_too_short_input_is_a_clear_error():
    with pytest.raises(FeatureError, match="not finite.*too short"):
        features.egemaps_functionals(torch.zeros(200), SR)
    with pytest.raises(FeatureError, match="mono"):
        features.egemaps_functionals(torch.zeros(2, SR), SR)


@pytest.mark.parametrize("classifier", ["logreg", "rbf_svm"])
def test_floor_learns_pitch_and_loudness_classes(corpus, classifier):
    model = fit_floor(*corpus["train"], *corpus["valid"], n_classes=4, classifier=classifier, seed=1)
    for split in ("valid", "test"):
        x, y = corpus[split]
        ua = np.mean([np.mean(model.predict(x)[y == c] == c) for c in range(4)])
        assert ua >= 0.8, f"{classifier} {split} UA {ua:.2f} (chance 0.25)"
    assert len(model.selection_log) == len(egemaps.default_grid(classifier))
    chosen = max(model.selection_log, key=lambda row: row["valid_UA"])["valid_UA"]
    assert model.selection_log[[r["C"] == model.hyper["C"] and r.get("gamma") == model.hyper.get("gamma")
                                for r in model.selection_log].index(True)]["valid_UA"] == chosen


def test_c_is_chosen_on_the_validation_set_and_ties_go_to_the_smaller_c():
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((60, 6))
    y_train = (x_train[:, 0] + 0.8 * rng.standard_normal(60) > 0).astype(int) + 2 * (x_train[:, 1] > 0)
    grid = [{"C": 1e-3}, {"C": 100.0}]
    small, large = (fit_floor(x_train, y_train, x_train, y_train, 4, grid=[point]) for point in grid)
    pool = rng.standard_normal((400, 6)) * 2
    disagree = small.predict(pool) != large.predict(pool)
    assert disagree.sum() >= 10
    x_valid = pool[disagree]
    # A validation set labelled the way one model predicts favours that model's C.
    assert fit_floor(x_train, y_train, x_valid, small.predict(x_valid), 4, grid=grid).hyper["C"] == 1e-3
    assert fit_floor(x_train, y_train, x_valid, large.predict(x_valid), 4, grid=grid).hyper["C"] == 100.0
    agree = pool[~disagree]
    assert fit_floor(x_train, y_train, agree, large.predict(agree), 4, grid=grid[::-1]).hyper["C"] == 100.0
    assert fit_floor(x_train, y_train, agree, large.predict(agree), 4, grid=grid).hyper["C"] == 1e-3


def test_training_set_lacking_a_class_is_an_error():
    x = np.random.default_rng(0).standard_normal((9, 3))
    with pytest.raises(FloorError, match=r"no utterance of class\(es\) \[2\]"):
        fit_floor(x, np.array([0, 1] * 4 + [0]), x, np.zeros(9, int), 3, grid=[{"C": 1.0}])


@pytest.mark.parametrize("classifier,n_classes", [("logreg", 4), ("logreg", 2), ("rbf_svm", 4), ("rbf_svm", 2)])
def test_plain_export_reproduces_the_posteriors_of_scikit_learn(corpus, classifier, n_classes):
    (x_train, y_train), (x_test, y_test) = corpus["train"], corpus["test"]
    keep, keep_test = y_train < n_classes, y_test < n_classes
    x_train, y_train, x_test = x_train[keep], y_train[keep], x_test[keep_test]
    model = fit_floor(x_train, y_train, x_train, y_train, n_classes, classifier=classifier,
                      grid=egemaps.default_grid(classifier)[3:4])
    posteriors = model.predict_proba(x_test)
    assert posteriors.shape == (len(x_test), n_classes) and np.allclose(posteriors.sum(axis=1), 1, atol=1e-12)

    # The tensors equal what scikit-learn fitted: our posteriors are its predict_proba.
    standardised = (x_train - model.net.mean.numpy()) / model.net.scale.numpy()
    _, estimator = egemaps._fit_point(standardised, y_train, classifier, egemaps.default_grid(classifier)[3],
                                      "balanced", seed=1)
    reference = estimator.predict_proba((x_test - model.net.mean.numpy()) / model.net.scale.numpy())
    np.testing.assert_allclose(posteriors, reference, rtol=0, atol=1e-10)

    # Plain data only: JSON config + tensors that survive safetensors (which cannot hold pickled objects).
    config, tensors = model.to_plain()
    config = json.loads(json.dumps(config))
    tensors = load_safetensors(save_safetensors(tensors))
    rebuilt = FloorModel.from_plain(config, tensors)
    assert np.array_equal(rebuilt.predict_proba(x_test), posteriors)

    net = FloorNet(config["classifier"], config["n_classes"], tensors)
    net.load_state_dict(tensors)
    logits = net(torch.from_numpy(x_test))
    assert logits.shape == (len(x_test), n_classes)
    np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), posteriors, rtol=0, atol=1e-12)


def test_from_plain_rejects_other_feature_sets_and_missing_tensors(corpus):
    model = fit_floor(*corpus["train"], *corpus["valid"], 4, grid=[{"C": 1.0}])
    config, tensors = model.to_plain()
    with pytest.raises(FloorError, match="feature set"):
        FloorModel.from_plain({**config, "feature_set": "ComParE_2016"}, tensors)
    del tensors["weight"]
    with pytest.raises(FloorError, match="lacks tensors"):
        FloorModel.from_plain(config, tensors)


def _speaker_sets(rng, n_speakers, per_speaker):
    """Rows of several speakers whose class (4 quadrants of the first two features) is learnable."""
    x = rng.standard_normal((n_speakers * per_speaker, 5))
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0)
    speakers = [f"spk{i // per_speaker}" for i in range(len(y))]
    return x, y, speakers


def test_cv_selection_is_not_led_astray_by_one_odd_validation_speaker():
    rng = np.random.default_rng(3)
    x_train, y_train, spk_train = _speaker_sets(rng, 6, 40)
    grid = [{"C": 0.01, "gamma": 0.001}, {"C": 100.0, "gamma": 0.2}]  # an underfit point, a good one
    x_valid = rng.standard_normal((40, 5))
    # A validation speaker "labelled" the way the underfit point predicts (its one-vs-one vote).
    y_odd = egemaps._predict_point(x_train, y_train, x_valid, "rbf_svm", grid[0], "balanced", seed=1)
    by_valid = fit_floor(x_train, y_train, x_valid, y_odd, 4, classifier="rbf_svm", grid=grid, selection="valid")
    assert by_valid.hyper["C"] == 0.01
    by_cv = fit_floor(x_train, y_train, x_valid, y_odd, 4, classifier="rbf_svm", grid=grid, selection="cv",
                      speakers=spk_train + ["odd"] * 40)
    assert by_cv.hyper["C"] == 100.0 and by_cv.hyper["cv_parts"] == "speaker"
    assert [row["cv_UA"] for row in by_cv.selection_log][1] > 0.7 > by_cv.selection_log[0]["cv_UA"]
    assert by_cv.selection_score == by_cv.selection_log[1]["cv_UA"]
    with pytest.raises(FloorError, match="speaker of every training and validation row"):
        fit_floor(x_train, y_train, x_valid, y_odd, 4, classifier="rbf_svm", grid=grid, selection="cv",
                  speakers=spk_train)
    by_utterance = fit_floor(x_train, y_train, x_valid, y_odd, 4, classifier="rbf_svm", grid=grid, selection="cv")
    assert by_utterance.hyper["cv_parts"] == "utterance" and by_utterance.hyper["C"] == 100.0


def test_refit_trains_the_chosen_point_on_training_and_validation_rows():
    rng = np.random.default_rng(4)
    x_train, y_train, _ = _speaker_sets(rng, 2, 40)
    x_train, y_train = x_train[y_train < 3], y_train[y_train < 3]
    x_valid, y_valid, _ = _speaker_sets(rng, 1, 80)  # the only rows of class 3 are in validation
    x_train = np.vstack([x_train, x_valid[y_valid == 3][:1]])  # one class-3 row keeps training complete
    y_train = np.concatenate([y_train, [3]])
    point = [{"C": 10.0}]
    alone = fit_floor(x_train, y_train, x_valid, y_valid, 4, grid=point)
    refitted = fit_floor(x_train, y_train, x_valid, y_valid, 4, grid=point, refit=True)
    both = np.vstack([x_train, x_valid])
    np.testing.assert_allclose(refitted.net.mean.numpy(), both.mean(axis=0))
    np.testing.assert_allclose(alone.net.mean.numpy(), x_train.mean(axis=0))
    x_new, y_new, _ = _speaker_sets(np.random.default_rng(5), 1, 400)
    recall = [np.mean(m.predict(x_new)[y_new == 3] == 3) for m in (alone, refitted)]
    assert recall[1] > recall[0] + 0.2, recall


def test_the_selection_splits_by_speaker_only_when_the_test_speakers_are_unseen(tmp_path):
    from types import SimpleNamespace

    (tmp_path / "utt2spk").write_text("a1 A\na2 A\nb1 B\nb2 B\nc1 C\n", encoding="utf-8")
    split = lambda *ids: SimpleNamespace(utterances=[SimpleNamespace(utt_id=i) for i in ids])  # noqa: E731
    unseen = SimpleNamespace(train=split("a1", "a2"), valid=split("b1"), test=split("c1"))
    assert egemaps._cv_speakers(unseen, tmp_path) == ["A", "A", "B"]
    seen = SimpleNamespace(train=split("a1", "b1"), valid=split("b2"), test=split("a2"))
    assert egemaps._cv_speakers(seen, tmp_path) is None
