"""The provenance stamp: version, configuration hash, input identity hash, UTC time."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone

import numpy as np

import gmm_stream
from pipeline.provenance import canonical_json, make_provenance

from pipeline_testing import ParquetFileCase, ZarrArrayCase, make_matrix


def test_stamp_fields():
    identity = {"kind": "zarr", "path": "/data/x.zarr", "shape": [10, 2], "mtime": "2026-01-01T00:00:00+00:00"}
    stamp = make_provenance({"n_components": 3}, identity)
    assert stamp["gmm_stream_version"] == gmm_stream.__version__
    expected = hashlib.sha256(b'{"n_components":3}').hexdigest()  # canonical JSON, by hand
    assert stamp["config_sha256"] == expected
    assert stamp["input"] == identity
    created = datetime.fromisoformat(stamp["created"])
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(timezone.utc) - created).total_seconds()) < 60
    json.dumps(stamp)  # JSON-able


def test_config_hash_ignores_key_order_but_not_values():
    a = make_provenance({"a": 1, "b": [1, 2], "c": {"x": np.float64(0.5)}}, {})
    b = make_provenance({"c": {"x": 0.5}, "b": [1, 2], "a": 1}, {})
    c = make_provenance({"a": 2, "b": [1, 2], "c": {"x": 0.5}}, {})
    assert a["config_sha256"] == b["config_sha256"] != c["config_sha256"]
    assert make_provenance(None, {})["config_sha256"] == hashlib.sha256(b"null").hexdigest()


def test_input_hash_follows_the_file(tmp_path):
    m = make_matrix(seed=20)
    source = ParquetFileCase().write(tmp_path, m)
    first = make_provenance(None, source.identity())
    again = make_provenance(None, source.identity())
    assert first["input_sha256"] == again["input_sha256"]
    os.utime(source.path, (1_000_000_000, 1_000_000_000))  # the file changed (as far as mtime tells)
    touched = make_provenance(None, source.identity())
    assert touched["input_sha256"] != first["input_sha256"]
    assert touched["input"]["mtime"].startswith("2001-09-09")


def test_identity_walks_directories(tmp_path):
    m = make_matrix(seed=21)
    source = ZarrArrayCase(3).write(tmp_path, m)
    before = source.identity()["mtime"]
    chunk = next(p for p in (tmp_path / "data.zarr" / "X").rglob("*") if p.is_file() and p.name != "zarr.json")
    os.utime(chunk, (4_000_000_000, 4_000_000_000))  # one chunk rewritten, metadata untouched
    after = source.identity()["mtime"]
    assert after != before and after.startswith("2096")


def test_canonical_json():
    assert canonical_json({"b": 1, "a": [np.int64(2), np.array([1.5])]}) == '{"a":[2,[1.5]],"b":1}'
