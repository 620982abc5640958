"""One table of the formats gmm-stream writes, one check of a stamp read back, one
conversion of NumPy values to JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from gmm_stream.exceptions import ModelFormatError
from pipeline.formats import FORMATS, check_format, json_text, jsonable, stamp
from pipeline.output_set import RUN_FILE, OutputSet


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_stamp_written_is_read_back(kind):
    fmt = FORMATS[kind]
    written = json.loads(json_text(stamp(kind)))
    assert written == {fmt.name_key: fmt.name, fmt.version_key: fmt.version}
    assert check_format(written, kind, "x.json") == fmt.version


def test_a_newer_version_names_the_file_the_versions_and_says_upgrade():
    with pytest.raises(ModelFormatError) as info:
        check_format({"format": "gmm-stream-model", "format_version": 7}, "model", "m/model.json")
    message = str(info.value)
    for fragment in ("m/model.json: format_version is 7", "newer gmm-stream", "reads format_version 1",
                     "upgrade gmm-stream"):
        assert fragment in message, message


def test_a_version_older_than_any_read_says_to_re_create_the_file():
    with pytest.raises(ModelFormatError, match=r"x.json: format_version is 0, not a version .* \(1\); re-create"):
        check_format({"format": "gmm-stream-model", "format_version": 0}, "model", "x.json")


def test_result_stamps_have_semver_versions():
    good = stamp("result")
    assert good == {"encoding-type": "gmm_stream_result", "encoding-version": "0.1.0"}
    with pytest.raises(ModelFormatError, match="encoding-version must be a version string like '0.1.0', got integer 1"):
        check_format(dict(good, **{"encoding-version": 1}), "result", "r.zarr")
    with pytest.raises(ModelFormatError, match="encoding-version is 0.10.0: the file was written by a newer"):
        check_format(dict(good, **{"encoding-version": "0.10.0"}), "result", "r.zarr")


@pytest.mark.parametrize("meta, expected", [
    ([1], "x.json must hold a JSON object, got an array of length 1; it is not a gmm-stream model"),
    ({}, "x.json has no 'format' key"),
    ({"format": "gmm-stream-em-state", "format_version": 1}, "x.json has format 'gmm-stream-em-state', expected "
                                                             "'gmm-stream-model'"),
    ({"format": "gmm-stream-model"}, "x.json: format_version is missing"),
    ({"format": "gmm-stream-model", "format_version": True}, "format_version must be an integer, got boolean true"),
])
def test_not_a_stamp_of_the_format(meta, expected):
    with pytest.raises(ModelFormatError) as info:
        check_format(meta, "model", "x.json")
    assert expected in str(info.value)


def test_the_error_class_is_the_callers():
    with pytest.raises(KeyError):
        check_format({}, "run", "run.json", KeyError)


def test_jsonable_converts_numpy_and_friends():
    value = {"a": np.arange(3), "b": (np.float32(1.5), np.int64(2)), "c": {np.str_("k"): np.bool_(True)},
             "d": {3, 1, 2}, "e": Path("/p/q"), "f": datetime(2024, 1, 2, tzinfo=timezone.utc), "g": None}
    out = jsonable(value)
    assert out == {"a": [0, 1, 2], "b": [1.5, 2], "c": {"k": True}, "d": [1, 2, 3], "e": "/p/q",
                   "f": "2024-01-02 00:00:00+00:00", "g": None}
    assert type(out["b"][1]) is int and type(out["c"]["k"]) is bool
    assert json.loads(json_text(value)) == out


def test_jsonable_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="cannot convert the RandomState value"):
        jsonable({"seed": np.random.RandomState(0)})


def test_a_run_of_a_newer_gmm_stream_is_left_alone(tmp_path):
    out = tmp_path / "out"
    newer = out / "runs" / "20990101T000000Z-newer"
    newer.mkdir(parents=True)
    (newer / RUN_FILE).write_text(json.dumps({"format": "gmm-stream-run", "format_version": 99,
                                              "fingerprint": "job", "status": "running"}))
    outputs = OutputSet(out, ["model"])
    with outputs.lock():
        run = outputs.begin("job", overwrite=False)
    assert not run.resumed and newer.exists()
