"""serkit.scoring.metrics against confusion matrices and edit distances worked out by hand."""
import math

import numpy as np
import pytest

from serkit.scoring import metrics

# Three classes, six utterances:
#   refs 0 0 0 1 1 2
#   hyps 0 0 1 1 2 2
# rows = reference, columns = hypothesis
REFS = [0, 0, 0, 1, 1, 2]
HYPS = [0, 0, 1, 1, 2, 2]
CM = np.array([[2, 1, 0],
               [0, 1, 1],
               [0, 0, 1]])


def test_confusion_matrix_rows_are_references():
    cm = metrics.confusion_matrix(REFS, HYPS, 3)
    np.testing.assert_array_equal(cm, CM)
    # ref 1 predicted as 2 lands in row 1, column 2, not the transpose
    assert cm[1, 2] == 1 and cm[2, 1] == 0


def test_confusion_matrix_length_mismatch():
    with pytest.raises(ValueError):
        metrics.confusion_matrix([0, 1], [0], 2)


def test_weighted_accuracy_is_plain_accuracy():
    # 4 of 6 right
    assert metrics.weighted_accuracy(CM) == pytest.approx(4 / 6)


def test_per_class_recall_and_unweighted_accuracy():
    # recalls 2/3, 1/2, 1/1; UA is their mean = (4/6 + 3/6 + 6/6) / 3 = 13/18
    np.testing.assert_allclose(metrics.per_class_recall(CM), [2 / 3, 1 / 2, 1.0])
    assert metrics.unweighted_accuracy(CM) == pytest.approx(13 / 18)


def test_ua_differs_from_wa_on_imbalanced_data():
    # 8 of class 0 all right, 2 of class 1 all wrong: WA 0.8 but UA 0.5
    cm = np.array([[8, 0], [2, 0]])
    assert metrics.weighted_accuracy(cm) == pytest.approx(0.8)
    assert metrics.unweighted_accuracy(cm) == pytest.approx(0.5)


def test_macro_f1():
    # precision 2/2, 1/2, 1/2; recall 2/3, 1/2, 1
    # F1: 2*1*(2/3)/(5/3) = 4/5;  1/2;  2*(1/2)*1/(3/2) = 2/3   -> mean 59/90
    assert metrics.macro_f1(CM) == pytest.approx(59 / 90)


def test_macro_f1_class_never_hit_scores_zero():
    # class 1 has support but no true positive: its F1 is 0
    cm = np.array([[2, 0], [2, 0]])
    # class 0: precision 2/4, recall 1 -> F1 2/3; class 1: 0 -> mean 1/3
    assert metrics.macro_f1(cm) == pytest.approx(1 / 3)


def test_class_without_support_is_left_out_of_ua_and_f1():
    # 4 classes; class 2 and 3 never occur as reference, class 3 is predicted once
    scores = metrics.classification_scores([0, 0, 1, 1], [0, 3, 1, 1], 4)
    assert scores["WA"] == pytest.approx(3 / 4)
    # recalls 1/2 and 2/2 for the present classes; absent classes are NaN, not 0
    assert scores["recall"][:2] == pytest.approx([0.5, 1.0])
    assert math.isnan(scores["recall"][2]) and math.isnan(scores["recall"][3])
    assert scores["UA"] == pytest.approx(0.75)
    # F1 class 0: precision 1/1, recall 1/2 -> 2/3; class 1: 1 -> mean 5/6
    assert scores["macro_F1"] == pytest.approx(5 / 6)
    np.testing.assert_array_equal(scores["confusion"], [[1, 0, 0, 1], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_perfect_predictions():
    scores = metrics.classification_scores([0, 1, 2, 3], [0, 1, 2, 3], 4)
    assert scores["WA"] == scores["UA"] == scores["macro_F1"] == 1.0


@pytest.mark.parametrize("ref, hyp, expected", [
    ("kitten", "sitting", 3),  # k->s, e->i, +g
    ("abc", "", 3),  # three deletions
    ("", "xy", 2),  # two insertions
    ("abc", "abc", 0),
    ("abcd", "acbd", 2),  # a transposition costs two edits
])
def test_edit_distance_strings(ref, hyp, expected):
    assert metrics.edit_distance(list(ref), list(hyp)) == expected


def test_edit_distance_on_tokens():
    # V0 deleted, N0 inserted: 2 edits
    assert metrics.edit_distance(["F0", "V0", "L0", "VS0"], ["F0", "L0", "VS0", "N0"]) == 2
    # one substitution of a whole multi-character token counts once
    assert metrics.edit_distance(["VS1"], ["VS0"]) == 1


def test_token_error_rate_sums_over_utterances():
    refs = [["a", "b", "c", "d"], ["e", "f"]]
    hyps = [["a", "x", "c", "d"], ["e", "f", "g"]]
    # 1 substitution + 1 insertion over 6 reference tokens (not the mean of 1/4 and 1/2)
    assert metrics.token_error_rate(refs, hyps) == pytest.approx(2 / 6)


def test_token_error_rate_can_exceed_one():
    assert metrics.token_error_rate([["a"]], [["x", "y", "z"]]) == pytest.approx(3.0)


def test_token_error_rate_without_reference_tokens():
    assert metrics.token_error_rate([[]], [[]]) == 0.0
    assert math.isinf(metrics.token_error_rate([[]], [["a"]]))


def test_token_error_rate_length_mismatch():
    with pytest.raises(ValueError):
        metrics.token_error_rate([["a"]], [])


def test_confusion_matrix_rejects_out_of_range_labels():
    """A negative or too-large class index is an error, never silently counted in another cell."""
    import pytest

    from serkit.scoring.metrics import confusion_matrix

    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, -1], [0, 0], 3)
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 0], 3)
