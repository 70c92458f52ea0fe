"""The run summary: headline numbers, and for one-model tests the null-corrected gap."""

from bench.report import summary_table
from dejavu.results import Row, to_frame


def test_one_model_tests_show_their_corrected_gap_and_null_not_the_raw_gap():
    rows = to_frame([Row("vlm-one-model-text", "all", "ppg", -0.108, -0.18, -0.01, 520),
                     Row("vlm-one-model-text", "all", "null_ppg", -0.311, -0.36, -0.26, 1000),
                     Row("vlm-one-model-text", "all", "corrected_ppg", 0.203, 0.12, 0.31, 1520),
                     Row("vlm-one-model-text", "canary", "corrected_ppg", 0.321, 0.18, 0.46, 1200),
                     Row("vlm-two-model", "canary", "canary_auroc@llr", 0.603, 0.56, 0.65, 520)])
    table = summary_table(rows)
    assert list(table.index) == [("vlm-two-model", "canary_auroc@llr"), ("vlm-one-model-text", "corrected_ppg"),
                                 ("vlm-one-model-text", "null_ppg")]
    assert table.loc[("vlm-one-model-text", "corrected_ppg"), "canary"] == "+0.321 [+0.180, +0.460]"
    assert table.loc[("vlm-one-model-text", "null_ppg"), "canary"] == ""
