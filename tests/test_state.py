"""The estimator's state in and out, without files: ``get_state`` / ``from_state`` of
``GaussianMixture`` and ``EMState``, checked, with errors that name the field only."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from gmm_stream import EMResult, EMState, GaussianMixture
from gmm_stream.exceptions import ModelFormatError

from gmm_testing import COVARIANCE_TYPES, make_mixture

K, D = 3, 2


@pytest.fixture(scope="module")
def X():
    X, *_ = make_mixture(300, D, K, seed=21, separation=3.0)
    return X


@pytest.fixture(scope="module")
def states(X):
    """EM states after iteration 2 of each of two initialisations (the second has a best),
    with their state taken then (EM goes on appending to the list of lower bounds)."""
    seen = []

    def callback(state):
        if state.n_iter == 2:
            seen.append((state, state.get_state()))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(K, n_init=2, max_iter=4, tol=0.0, random_state=1, init_params="random").fit(
            X, callback=callback)
    return seen


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_model_state_round_trip(X, covariance_type):
    gm = GaussianMixture(K, covariance_type=covariance_type, random_state=0).fit(X)
    meta, arrays = gm.get_state()
    assert json.loads(json.dumps(meta, allow_nan=False)) == meta  # plain JSON, no NumPy values
    assert set(arrays) == {"weights", "means", "covariances", "precisions_cholesky"}
    loaded = GaussianMixture.from_state(meta, arrays)
    assert loaded.get_params() == gm.get_params()
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(gm, name))
    np.testing.assert_array_equal(loaded.predict(X), gm.predict(X))


def test_a_random_generator_is_not_kept_but_a_seed_is(X):
    gm = GaussianMixture(2, random_state=np.random.RandomState(0)).fit(X)
    assert gm.get_state()[0]["params"]["random_state"] is None
    assert GaussianMixture(2, random_state=np.int64(5)).fit(X).get_state()[0]["params"]["random_state"] == 5


def test_state_of_an_unfitted_model():
    with pytest.raises(NotFittedError):
        GaussianMixture(2).get_state()


def test_from_state_names_the_field_and_no_file(X):
    meta, arrays = GaussianMixture(K, random_state=0).fit(X).get_state()
    with pytest.raises(ModelFormatError) as info:
        GaussianMixture.from_state(meta, dict(arrays, means=arrays["means"][:2]))
    err = info.value
    assert str(err) == "model state: means has shape (2, 2), expected (3, 2) (n_components=3, n_features=2)"
    assert (err.field, err.part) == ("means", "arrays")
    with pytest.raises(ModelFormatError, match=r"^model state: params.n_components must be >= 1, got 0$") as info:
        GaussianMixture.from_state(dict(meta, params=dict(meta["params"], n_components=0)), arrays)
    assert (info.value.field, info.value.part) == ("params.n_components", "meta")


def test_from_state_checks_values(X):
    meta, arrays = GaussianMixture(K, random_state=0).fit(X).get_state()
    with pytest.raises(ModelFormatError, match="weights sum to"):
        GaussianMixture.from_state(meta, dict(arrays, weights=arrays["weights"] * 2))
    with pytest.raises(ModelFormatError, match="unknown key"):
        GaussianMixture.from_state(dict(meta, extra=1), arrays)


def test_checking_headers_reads_no_values(X):
    meta, arrays = GaussianMixture(K, random_state=0).fit(X).get_state()
    headers = {name: (a.shape, a.dtype) for name, a in arrays.items()}
    GaussianMixture.check_state(meta, headers)
    with pytest.raises(ModelFormatError, match="means has dtype object"):
        GaussianMixture.check_state(meta, dict(headers, means=((K, D), np.dtype(object))))


def test_checkpoint_state_round_trip(states):
    for state, (meta, arrays) in states:
        assert json.loads(json.dumps(meta)) == meta
        loaded = EMState.from_state(meta, arrays)
        assert (loaded.init, loaded.n_iter, loaded.lower_bounds) == (state.init, 2, state.lower_bounds[:2])
        np.testing.assert_array_equal(loaded.params.means, state.params.means)
        np.testing.assert_array_equal(loaded.stats.S2, state.stats.S2)
        assert (loaded.best is None) == (state.best is None)
        if state.best is not None:
            assert isinstance(loaded.best, EMResult)
            assert loaded.best.lower_bounds == state.best.lower_bounds
            np.testing.assert_array_equal(loaded.best.params.covariances, state.best.params.covariances)


def test_the_best_result_is_a_frozen_record(states):
    best = states[1][0].best
    assert isinstance(best, EMResult) and best.lower_bound == best.lower_bounds[-1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        best.n_iter = 0


def test_checkpoint_from_state_names_the_field(states):
    meta, arrays = states[1][1]
    with pytest.raises(ModelFormatError) as info:
        EMState.from_state(meta, dict(arrays, best_means=arrays["best_means"][:, :1]))
    assert str(info.value).startswith("checkpoint state: best_means has shape (3, 1), expected (3, 2)")
    assert info.value.part == "arrays"
