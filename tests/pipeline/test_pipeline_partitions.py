"""Partitions for refreshes: what the sources name, what a refresh plans, what the model directory keeps.

Real files only: Parquet written by pandas/pyarrow, Zarr v3 arrays written by zarr, model
directories written and read back by :mod:`pipeline.model_directory`. The expected row
ranges and values are computed here from what was written (pandas' own reading of each
file, the NumPy arrays given to zarr), not from the sources.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
import zarr

import pipeline.formats as formats
from gmm_stream import GaussianMixture, PartitionStatistics, partition_statistics
from gmm_stream.exceptions import ModelFormatError
from pipeline.model_directory import read_model_directory, write_model_directory
from pipeline.partitions import PARTITIONS_FILE, partition_identities, plan_refresh
from pipeline.preprocess import Preprocessor
from pipeline.sources import ParquetSource, Partition, ZarrSource

# ------------------------------------------------------------------------------- Parquet


def _frame(seed: int, n: int, first_id: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    X[rng.random((n, 3)) < 0.05] = np.nan
    frame = pd.DataFrame(X, columns=["x0", "x1", "x2"])
    frame.insert(0, "sample_id", [f"s{first_id + i:05d}" for i in range(n)])
    return frame


def _write(path, frame: pd.DataFrame, row_group: int = 25) -> None:
    frame.to_parquet(path, engine="pyarrow", index=False, row_group_size=row_group)


def _open(directory, chunk_rows: int = 40):
    source = ParquetSource(directory, ["x0", "x1", "x2"], id_column="sample_id", chunk_rows=chunk_rows)
    data = source.open()
    return source, data, source.partitions(data)


@pytest.fixture
def parquet_dir(tmp_path):
    directory = tmp_path / "parts"
    directory.mkdir()
    for i, n in enumerate((70, 45, 90)):  # row counts that do not fall on chunk or row-group bounds
        _write(directory / f"part-{i}.parquet", _frame(i, n, 1000 * i))
    return directory


def test_parquet_partitions_are_the_files_in_row_order(parquet_dir):
    source, data, parts = _open(parquet_dir)
    files = sorted(parquet_dir.glob("*.parquet"))
    assert [p.key for p in parts] == [str(f) for f in files]
    assert data.data.chunks[0] == (40, 40, 40, 40, 40, 5)  # partitions do not follow the Dask chunks
    start = 0
    for part, path in zip(parts, files, strict=True):
        expected = pd.read_parquet(path)
        assert (part.start, part.stop) == (start, start + len(expected))
        start = part.stop
        rows = data[part.start:part.stop]
        np.testing.assert_array_equal(rows.values, expected[["x0", "x1", "x2"]].to_numpy())  # NaN == NaN here
        np.testing.assert_array_equal(rows["sample"].values.astype(str), expected["sample_id"].to_numpy())
        assert part.identity == {"size": os.path.getsize(path), "mtime": part.identity["mtime"], "rows": len(expected)}
    assert start == data.shape[0] == 205


def test_parquet_identity_changes_with_the_file_not_with_other_files(parquet_dir):
    _, _, before = _open(parquet_dir)
    by_key = {p.key: p for p in before}
    first, second, third = (str(parquet_dir / f"part-{i}.parquet") for i in range(3))

    # another file, sorting first: every row range moves, no key or identity does
    _write(parquet_dir / "early.parquet", _frame(9, 30, 9000))
    _, _, added = _open(parquet_dir)
    assert [p.key for p in added] == [str(parquet_dir / "early.parquet"), first, second, third]
    for part in added[1:]:
        assert part.identity == by_key[part.key].identity
        assert part.start == by_key[part.key].start + 30
        assert part.unchanged(by_key[part.key].identity)

    # the same bytes, another modification time: changed
    stat = os.stat(second)
    os.utime(second, ns=(stat.st_atime_ns, stat.st_mtime_ns - 5_000_000_000))
    # other rows in the third file: size and rows change
    _write(parquet_dir / "part-2.parquet", _frame(2, 91, 2000))
    _, _, after = _open(parquet_dir)
    now = {p.key: p for p in after}
    assert now[first].identity == by_key[first].identity
    assert now[second].identity["size"] == by_key[second].identity["size"]
    assert now[second].identity["mtime"] != by_key[second].identity["mtime"]
    assert not now[second].unchanged(by_key[second].identity)
    assert now[third].identity["rows"] == 91 and now[third].identity["size"] != by_key[third].identity["size"]
    assert not now[third].unchanged(by_key[third].identity)
    assert now[third].stop - now[third].start == 91


# ------------------------------------------------------------------------------- Zarr

STORED = 10  # rows per stored chunk


def _zarr_array(path, X: np.ndarray) -> zarr.Array:
    array = zarr.create_array(str(path), shape=X.shape, chunks=(STORED, X.shape[1]), dtype="f8", zarr_format=3)
    array[...] = X
    return array


def _zarr_parts(path):
    source = ZarrSource(path, chunk_rows=2 * STORED)
    data = source.open()
    return data, source.partitions(data)


def test_zarr_partitions_are_the_row_chunks_and_follow_the_stored_chunks(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((100, 3))
    path = tmp_path / "x.zarr"
    array = _zarr_array(path, X)
    data, parts = _zarr_parts(path)
    assert [p.key for p in parts] == [f"rows {a}-{a + 20}" for a in range(0, 100, 20)]
    assert [(p.start, p.stop) for p in parts] == [(a, a + 20) for a in range(0, 100, 20)]
    for part in parts:
        np.testing.assert_array_equal(data[part.start:part.stop].values, X[part.start:part.stop])
        assert len(part.identity["objects"]) == 2 and all(o is not None for o in part.identity["objects"])
    # each object's size and mtime are those of its chunk file (zarr v3 default key encoding c/i/j)
    st = os.stat(path / "c" / "3" / "0")
    assert parts[1].identity["objects"][1] == [st.st_size, st.st_mtime_ns]

    # new values in one stored chunk (rows 30-40): that partition alone changes
    time.sleep(0.05)  # file timestamps come from a coarse clock: make sure the rewrite gets a new one
    array[30:40] = rng.standard_normal((10, 3))
    _, rewritten = _zarr_parts(path)
    changed = [p.key for p, q in zip(parts, rewritten, strict=True) if not q.unchanged(p.identity)]
    assert changed == ["rows 20-40"]
    assert [p.key for p in rewritten] == [p.key for p in parts]

    # rows appended: the full chunks before keep their keys and identities
    time.sleep(0.05)
    array.resize((135, 3))
    array[100:135] = rng.standard_normal((35, 3))
    data, appended = _zarr_parts(path)
    assert [p.key for p in appended] == [*(p.key for p in rewritten), "rows 100-120", "rows 120-135"]
    for old, new in zip(rewritten, appended, strict=False):
        assert new.unchanged(old.identity) and (new.start, new.stop) == (old.start, old.stop)
    assert appended[-1].identity["objects"][1] is not None  # the last chunk holds 5 rows, and a file
    np.testing.assert_array_equal(data[100:135].values, array[100:135])


def test_zarr_partial_last_chunk_changes_key_when_rows_are_appended(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "y.zarr"
    array = _zarr_array(path, rng.standard_normal((95, 2)))
    _, before = _zarr_parts(path)
    assert before[-1].key == "rows 80-95"
    time.sleep(0.05)
    array.resize((125, 2))
    array[95:125] = rng.standard_normal((30, 2))
    _, after = _zarr_parts(path)
    keys = [p.key for p in after]
    assert keys[:4] == [p.key for p in before[:4]] and "rows 80-95" not in keys and "rows 80-100" in keys
    assert all(a.unchanged(b.identity) for a, b in zip(after[:4], before[:4], strict=True))
    # the plan: the grown chunk is new, its old range is removed
    identities = partition_identities(before)["partitions"]
    plan = plan_refresh(after, identities, PartitionStatistics(visits=dict.fromkeys(identities, 0)))
    assert plan.new == ["rows 80-100", "rows 100-120", "rows 120-125"]
    assert plan.removed == ["rows 80-95"] and plan.changed == [] and plan.unchanged == 4


# ------------------------------------------------------------------------------- plan_refresh


@pytest.fixture(scope="module")
def fitted():
    """A model fitted to two clusters, and the data."""
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(-3, 1, (300, 2)), rng.normal(3, 1, (300, 2))])[rng.permutation(600)]
    model = GaussianMixture(2, covariance_type="full", random_state=0, tol=1e-8, max_iter=200).fit(X)
    return model, X


def _record(fitted, visits: dict[str, int], refreshes: int) -> PartitionStatistics:
    """A real record: the statistics of 50-row ranges, each key stamped with its visit."""
    model, X = fitted
    params = model.params_.astype(np.float64)
    record = PartitionStatistics()
    for i, (key, visit) in enumerate(visits.items()):
        stats = partition_statistics(X, params, {key: (50 * i, 50 * i + 50)})
        record = record.visited(params, stats, refresh=visit)
    for _ in range(refreshes):
        record = record.next_refresh()
    assert record.refreshes == refreshes and record.visits == visits
    return record


def _part(key: str, start: int, identity) -> Partition:
    return Partition(key, start, start + 50, identity)


def test_plan_classifies_new_changed_removed_and_stalest(fitted):
    stored = {k: {"size": 1, "mtime": k} for k in ("a", "b", "c", "d", "e", "f", "g")}
    record = _record(fitted, {"a": 3, "b": 0, "c": 1, "d": 2, "e": 0, "f": 0, "g": 2}, refreshes=4)
    now = [_part("a", 0, stored["a"]), _part("b", 50, {"size": 2, "mtime": "b"}),  # b changed
           _part("c", 100, stored["c"]), _part("d", 150, stored["d"]),
           _part("f", 200, stored["f"]), _part("g", 250, None),  # g: unknown identity, read again
           _part("h", 300, {"size": 1, "mtime": "h"})]  # h new; e removed
    plan = plan_refresh(now, stored, record, stale_partitions=2)
    assert plan.new == ["h"] and plan.changed == ["b", "g"] and plan.removed == ["e"]
    # stalest of the unchanged a (3), c (1), d (2), f (0): f then c; b (0, changed) and e (0, removed) excluded
    assert plan.stale == ["f", "c"]
    assert plan.visit == ["h", "b", "g", "f", "c"]
    assert plan.rows == {"h": (300, 350), "b": (50, 100), "g": (250, 300), "f": (200, 250), "c": (100, 150)}
    assert plan.unchanged == 2  # a and d
    assert plan.to_dict() == {"new": ["h"], "changed": ["b", "g"], "stale": ["f", "c"], "removed": ["e"],
                              "unchanged": 2, "rows_read": 250}
    # without stale partitions: only what is new or changed
    assert plan_refresh(now, stored, record).stale == []
    # more stale partitions asked than there are: every unchanged one, stalest first
    assert plan_refresh(now, stored, record, stale_partitions=10).stale == ["f", "c", "d", "a"]


def test_unknown_identity_is_always_changed(fitted):
    record = _record(fitted, {"all": 0}, refreshes=1)
    for stored in (None, {"mtime": None}):
        plan = plan_refresh([Partition("all", 0, 600, None)], {"all": stored}, record)
        assert plan.changed == ["all"] and plan.new == [] and plan.unchanged == 0
        assert plan.rows == {"all": (0, 600)}
    assert not Partition("all", 0, 600, None).unchanged(None)


def test_stale_ties_are_taken_in_turn_over_refreshes(fitted):
    keys = ["p0", "p1", "p2", "p3"]
    stored = {k: {"n": k} for k in keys}
    now = [_part(k, 50 * i, stored[k]) for i, k in enumerate(keys)]
    taken = []
    for refreshes in range(4):
        record = _record(fitted, dict.fromkeys(keys, 0), refreshes=refreshes)
        taken.append(plan_refresh(now, stored, record, stale_partitions=1).stale)
    assert taken == [["p0"], ["p1"], ["p2"], ["p3"]]  # every partition once in four refreshes
    # a tie broken in turn, but an older visit still comes first
    record = _record(fitted, {"p0": 1, "p1": 1, "p2": 0, "p3": 1}, refreshes=2)
    assert plan_refresh(now, stored, record, stale_partitions=2).stale == ["p2", "p3"]


# ------------------------------------------------------------------------------- model directory


@pytest.fixture
def recorded(fitted):
    """A model with a partition record of three row ranges, its preprocessing, their identities."""
    model, X = fitted
    pre = Preprocessor(["standardize"]).fit(X)
    Z = np.asarray(pre.transform(X))
    model = GaussianMixture(2, covariance_type="full", random_state=0, tol=1e-8).fit(Z)
    parts = [Partition(f"file-{i}", 200 * i, 200 * i + 200, {"size": 100 + i, "mtime": "t", "rows": 200})
             for i in range(3)]
    model.record_partitions(partition_statistics(Z, model.params_.astype(np.float64),
                                                 {p.key: (p.start, p.stop) for p in parts}))
    training = {**formats.stamp("training"), "n_rows": 600}
    return model, pre, training, parts, Z


def test_model_directory_round_trip_keeps_the_partition_record(tmp_path, recorded):
    model, pre, training, parts, Z = recorded
    settings = {"name": "t", "model": {"n_components": 2}}
    write_model_directory(tmp_path / "model", model, pre, training, settings, partition_identities(parts))
    on_disk = json.loads((tmp_path / "model" / PARTITIONS_FILE).read_text())
    assert on_disk["format"] == "gmm-stream-partitions" and on_disk["format_version"] == 1
    saved = read_model_directory(tmp_path / "model")
    assert saved.partitions == {p.key: p.identity for p in parts} and saved.settings == settings
    back, record = saved.model, saved.model.partitions_
    np.testing.assert_array_equal(back.means_, model.means_)
    np.testing.assert_array_equal(back.covariances_, model.covariances_)
    assert record.keys == [p.key for p in parts] and record.refreshes == model.partitions_.refreshes
    assert record.visits == model.partitions_.visits
    for p in parts:
        ours, theirs = model.partitions_.stats[p.key], record.stats[p.key]
        for name in ("N", "S1", "S2", "center"):
            np.testing.assert_array_equal(getattr(theirs, name), getattr(ours, name))
        assert record.entropy[p.key] == model.partitions_.entropy[p.key]
    # the record's total: one E-step over all the rows under the saved parameters (independent count)
    resp = back.predict_proba(Z)
    np.testing.assert_allclose(record.total().N, resp.sum(axis=0), rtol=1e-10)
    np.testing.assert_array_equal(np.asarray(saved.preprocessor.transform(Z[:5])), np.asarray(pre.transform(Z[:5])))


def test_partitions_file_naming_other_keys_is_refused(tmp_path, recorded):
    model, pre, training, parts, _ = recorded
    write_model_directory(tmp_path / "model", model, pre, training, {}, partition_identities(parts))
    path = tmp_path / "model" / PARTITIONS_FILE
    content = json.loads(path.read_text())
    content["partitions"]["file-9"] = content["partitions"].pop("file-1")
    path.write_text(json.dumps(content))
    with pytest.raises(ModelFormatError, match=PARTITIONS_FILE) as err:
        read_model_directory(tmp_path / "model")
    assert str(tmp_path / "model") in str(err.value) and "file-9" in str(err.value)
    # and a writer is refused before anything is written
    other = partition_identities([*parts[:2], Partition("file-9", 400, 600, {"size": 1})])
    with pytest.raises(ModelFormatError, match="file-9"):
        write_model_directory(tmp_path / "other", model, pre, training, {}, other)
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("format_version", 99, "newer gmm-stream"),
    ("format_version", "1", "must be an integer"),
    ("format", "gmm-stream-training", "expected 'gmm-stream-partitions'"),
])
def test_partitions_file_with_another_stamp_is_refused(tmp_path, recorded, key, value, message):
    model, pre, training, parts, _ = recorded
    write_model_directory(tmp_path / "model", model, pre, training, {}, partition_identities(parts))
    path = tmp_path / "model" / PARTITIONS_FILE
    content = json.loads(path.read_text())
    content[key] = value
    path.write_text(json.dumps(content))
    with pytest.raises(ModelFormatError, match=message) as err:
        read_model_directory(tmp_path / "model")
    assert str(path) in str(err.value)
