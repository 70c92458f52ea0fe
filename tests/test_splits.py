"""Per-class A / B / public / eval splits: the rule, manifests that preset splits, and the invariants."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dejavu.records import Box, Record, RecordError, RecordSet
from dejavu.splits import (
    SHARED,
    assign_splits,
    plant_canaries,
    split_rank,
    summarize_splits,
    training_records,
)

BOX = (Box(1, 1, 5, 5, "fg"),)


def rec(rid, label="cat", boxes=True, split=None, repeat=1, image=None):
    return Record(id=rid, image=Path(image or f"{rid}.png"), width=10, height=10, label=label,
                  boxes=BOX if boxes else (), split=split, repeat=repeat)


def splits_of(records):
    return {r.id: r.split for r in records}


def test_per_class_rule_on_a_hand_worked_class():
    boxed = [rec(f"b{i}") for i in range(7)]
    boxless = [rec(f"n{i}", boxes=False) for i in range(2)]
    out = splits_of(assign_splits(boxed + boxless, per_class=10, seed=3, eval_fraction=0.34))
    # m = min(floor(7/2), 10) = 3; the order is the seeded hash of the id.
    order = sorted((r.id for r in boxed), key=lambda i: split_rank(3, "order", i))
    assert [out[i] for i in order] == ["A"] * 3 + ["B"] * 3 + [out[order[6]]]
    rest = [order[6], "n0", "n1"]
    assert Counter(out[i] for i in rest) == {"eval": 1, "public": 2}  # floor(0.34 * 3) = 1
    assert out[min(rest, key=lambda i: split_rank(3, "eval", i))] == "eval"


def test_per_class_caps_and_classes_are_independent():
    records = [rec(f"c{i}", "cat") for i in range(10)] + [rec(f"d{i}", "dog") for i in range(5)]
    summary = summarize_splits(assign_splits(records, per_class=2, seed=0, eval_fraction=0.0))
    assert summary.per_class["cat"] == {"A": 2, "B": 2, "public": 6}
    assert summary.per_class["dog"] == {"A": 2, "B": 2, "public": 1}  # min(floor(5/2), 2) = 2
    assert summary.counts == {"A": 4, "B": 4, "public": 7}
    assert summarize_splits(assign_splits(records, per_class=0, seed=0, eval_fraction=0)).counts == {
        "public": 15}


def test_boxless_records_never_train_and_the_seed_changes_the_assignment():
    records = [rec(f"b{i}") for i in range(20)] + [rec(f"n{i}", boxes=False) for i in range(20)]
    one = assign_splits(records, per_class=5, seed=1)
    assert all(r.split in ("public", "eval") for r in one if not r.boxes)
    assert splits_of(one) == splits_of(assign_splits(records, per_class=5, seed=1))
    assert splits_of(one) != splits_of(assign_splits(records, per_class=5, seed=2))


def test_a_fully_preset_manifest_is_kept_as_it_is():
    records = [rec("a", split="A"), rec("b", split="public"), rec("c", split="eval", boxes=False),
               rec("d", split="public")]
    assert splits_of(assign_splits(records, per_class=5, seed=0)) == {
        "a": "A", "b": "public", "c": "eval", "d": "public"}


def test_a_mixed_manifest_fills_a_and_b_up_to_m_around_the_preset_records():
    records = [rec("p0", split="A"), rec("p1", split="public")] + [rec(f"b{i}") for i in range(6)]
    out = assign_splits(records, per_class=10, seed=0, eval_fraction=0)
    assert out.by_id("p0").split == "A" and out.by_id("p1").split == "public"
    # p1 is out of the A/B pool: 7 box records -> m = 3; two more to A, three to B, one to public.
    assert summarize_splits(out).counts == {"A": 3, "B": 3, "public": 2}
    # A preset A larger than m is kept, and B still gets m.
    big_a = [rec(f"a{i}", split="A") for i in range(3)] + [rec(f"b{i}") for i in range(3)]
    assert summarize_splits(assign_splits(big_a, per_class=2, seed=0, eval_fraction=0)).counts == {
        "A": 3, "B": 2, "public": 1}


def test_unknown_split_value_names_the_record():
    with pytest.raises(RecordError, match="'x'.*unknown split 'train'"):
        assign_splits([rec("x", split="train")], per_class=1, seed=0)


def test_same_id_under_two_splits_is_an_error_naming_it():
    with pytest.raises(RecordError, match="'x'.*listed twice, under 'A' and 'public'"):
        assign_splits([rec("x", split="A"), rec("x", split="public")], per_class=1, seed=0)


def test_same_image_under_two_splits_is_an_error_naming_both_records():
    records = [rec("x", split="A", image="same.png"), rec("y", split="public", image="./same.png")]
    with pytest.raises(RecordError, match="'y'.*same.png.*same image as record 'x'"):
        assign_splits(records, per_class=1, seed=0)


def test_canaries_go_to_a_first_and_a_canary_elsewhere_is_an_error():
    records = [rec(f"b{i}") for i in range(10)] + [rec("canary", repeat=5)]
    out = assign_splits(records, per_class=1, seed=0)
    assert out.by_id("canary").split == "A"
    assert summarize_splits(out).counts["A"] == 1 and summarize_splits(out).canaries == 1
    with pytest.raises(RecordError, match="'canary'.*canary \\(repeat=5\\) is in split 'B'"):
        assign_splits([replace(r, split="B") if r.id == "canary" else r for r in records],
                      per_class=1, seed=0)
    with pytest.raises(RecordError, match="'lonely'.*has no boxes"):
        assign_splits([rec("lonely", boxes=False, repeat=2)], per_class=1, seed=0)


def test_shared_padding_is_off_by_default_and_trains_both_models():
    records = [rec(f"b{i}") for i in range(4)] + [rec(f"n{i}", boxes=False) for i in range(3)]
    assert summarize_splits(assign_splits(records, per_class=2, seed=0)).shared == 0
    padded = assign_splits(records, per_class=2, seed=0, pad_shared=2)
    summary = summarize_splits(padded)
    assert summary.shared == 2 and summary.counts[SHARED] == 2
    assert "2 records in both A and B" in str(summary)
    shared_ids = {r.id for r in padded if r.split == SHARED}
    for split in ("A", "B"):
        train = training_records(padded, split)
        assert {r.id for r in train} == shared_ids | {r.id for r in padded if r.split == split}


def test_summary_prints_counts_per_split_and_class():
    records = [rec(f"c{i}", "cat") for i in range(4)] + [rec("n", "dog", boxes=False)]
    text = str(summarize_splits(assign_splits(records, per_class=1, seed=0, eval_fraction=0)))
    lines = text.splitlines()
    assert lines[1].split() == ["A", "1", "1"] and lines[3].split() == ["public", "3", "2"]
    assert "canaries in A: 0; shared padding: off" in text
    assert any(line.split() == ["dog", "0", "0", "1", "0", "0"] for line in lines)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="eval_fraction"):
        assign_splits([rec("a")], per_class=1, seed=0, eval_fraction=1.5)
    with pytest.raises(ValueError, match="per_class"):
        assign_splits([rec("a")], per_class=-1, seed=0)


# --- properties ----------------------------------------------------------------------------------

manifests = st.lists(
    st.tuples(st.sampled_from(["cat", "dog", None]), st.booleans(), st.sampled_from([1, 1, 1, 3]),
              st.sampled_from([None, None, None, "A", "public"])),
    min_size=1, max_size=30,
).map(lambda rows: [rec(f"r{i}", label, boxes, split, repeat)
                    for i, (label, boxes, repeat, split) in enumerate(rows)])


def _assign_or_error(records, **kw):
    try:
        return splits_of(assign_splits(records, **kw))
    except RecordError as err:
        return err.record_id


@settings(max_examples=60, deadline=None)
@given(manifests, st.randoms(use_true_random=False), st.integers(0, 5), st.integers(0, 3))
def test_assignment_does_not_depend_on_input_order(records, rnd, per_class, seed):
    shuffled = list(records)
    rnd.shuffle(shuffled)
    kw = dict(per_class=per_class, seed=seed, eval_fraction=0.3, pad_shared=1)
    assert _assign_or_error(shuffled, **kw) == _assign_or_error(records, **kw)


@settings(max_examples=60, deadline=None)
@given(manifests.map(lambda rs: [replace(r, repeat=1, split=None) for r in rs]), st.integers(0, 5))
def test_a_and_b_hold_m_box_records_per_class(records, per_class):
    out = assign_splits(records, per_class=per_class, seed=7)
    for label in {r.label for r in records}:
        group = [r for r in out if r.label == label]
        m = min(sum(1 for r in group if r.boxes) // 2, per_class)
        got = Counter(r.split for r in group)
        assert (got["A"], got["B"]) == (m, m)
        assert all(r.boxes for r in group if r.split in ("A", "B"))
    assert len(out) == len(records) and set(out.ids) == {r.id for r in records}
    assert isinstance(out, RecordSet)


def test_plant_canaries_sets_exactly_n_canaries_in_a_and_resets_the_rest():
    records = assign_splits([rec(f"r{i}", label="cat", repeat=5 if i < 4 else 1) for i in range(40)] +
                            [rec(f"d{i}", label="dog") for i in range(40)], per_class=10, seed=0)
    planted = plant_canaries(records, 7, repeat=30, seed=2)
    canaries = [r for r in planted if r.is_canary]
    assert len(canaries) == 7 and {r.split for r in canaries} == {"A"} and {r.repeat for r in canaries} == {30}
    assert all(r.repeat == 1 for r in planted if not r.is_canary)  # the dataset's own canaries are replaced
    # the first 7 of A's box records in the seeded order of their ids, whatever the input order
    a_ids = sorted((r.id for r in records if r.split == "A"), key=lambda i: split_rank(2, "canary", i))
    assert {r.id for r in canaries} == set(a_ids[:7])
    shuffled = plant_canaries(RecordSet(list(records)[::-1]), 7, repeat=30, seed=2)
    assert {r.id for r in shuffled if r.is_canary} == {r.id for r in canaries}
    # nothing but `repeat` changes
    before = {r.id: replace(r, repeat=1) for r in records}
    assert all(replace(r, repeat=1) == before[r.id] for r in planted)


def test_plant_canaries_rejects_impossible_requests():
    records = assign_splits([rec(f"r{i}") for i in range(10)], per_class=3, seed=0)
    with pytest.raises(ValueError, match="4 canaries asked for, but split A has only 3"):
        plant_canaries(records, 4, repeat=20, seed=0)
    with pytest.raises(ValueError, match="repeat >= 1"):
        plant_canaries(records, 1, repeat=0, seed=0)
    assert not any(r.is_canary for r in plant_canaries(records, 0, repeat=20, seed=0))


def test_fingerprint_hashes_image_bytes_not_paths(tmp_path):
    def records_in(folder: Path, contents: dict[str, bytes]) -> RecordSet:
        folder.mkdir(exist_ok=True)
        for rid, data in contents.items():
            (folder / f"{rid}.png").write_bytes(data)
        return RecordSet([rec(rid, image=folder / f"{rid}.png") for rid in contents])

    contents = {"r0": b"zero", "r1": b"one"}
    here, there = records_in(tmp_path / "here", contents), records_in(tmp_path / "there", contents)
    assert here.fingerprint() == there.fingerprint()  # the same bytes elsewhere
    assert here.path_fingerprint() != there.path_fingerprint()  # what earlier releases keyed by
    rewritten = records_in(tmp_path / "later", {**contents, "r1": b"uno"})
    assert rewritten.fingerprint() != here.fingerprint()  # the same names, other bytes


def test_fingerprint_depends_on_content_not_on_the_set_object():
    records = [rec(f"r{i}") for i in range(6)]
    rs = RecordSet(records)
    first = rs.fingerprint()
    assert rs.fingerprint() == first == RecordSet(list(records)).fingerprint()  # computed once, same value
    assert rs[:5].fingerprint() != first  # a slice is another set with its own content
    assert RecordSet([replace(r, repeat=3) if r.id == "r0" else r for r in records]).fingerprint() != first
