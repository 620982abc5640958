"""Checkpoints: an EM fit interrupted after any iteration and resumed from its last saved
state ends with exactly the model of the uninterrupted fit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gmm_stream import GaussianMixture
from gmm_stream.exceptions import ModelFormatError
from pipeline import load_state, save_state

from gmm_testing import add_missing, make_mixture


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def X():
    X, *_ = make_mixture(600, 3, 3, seed=5, separation=2.0)
    return add_missing(X, 0.1, seed=6)


def _fit(X, **fit_kw):
    gm = GaussianMixture(3, n_init=3, init_params="random", tol=1e-8, max_iter=30, random_state=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gm.fit(X, **fit_kw)


@pytest.mark.parametrize("stop_after", [1, 29, 45, 89])
def test_resume_from_checkpoint_equals_uninterrupted_fit(X, tmp_path, stop_after):
    reference = _fit(X)
    seen = []

    def checkpoint(state):
        save_state(state, tmp_path / "ckpt")
        seen.append((state.init, state.n_iter))
        if len(seen) == stop_after:
            raise Interrupted

    with pytest.raises(Interrupted):
        _fit(X, callback=checkpoint)
    state = load_state(tmp_path / "ckpt")
    assert (state.init, state.n_iter) == seen[-1]
    resumed = _fit(X, resume_from=state)
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bounds_"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(reference, name), rtol=1e-12, atol=0)
    assert resumed.n_iter_ == reference.n_iter_


def test_callback_sees_every_iteration(X):
    states = []
    gm = _fit(X, callback=states.append)
    for init in range(3):
        iters = [s.n_iter for s in states if s.init == init]
        assert iters == list(range(1, len(iters) + 1))
    assert {s.init for s in states} == {0, 1, 2}
    best = max((s for s in states if s.converged or s.n_iter == 30), key=lambda s: s.lower_bound)
    np.testing.assert_allclose(gm.lower_bound_, best.lower_bound, rtol=0, atol=0)


def test_load_state_of_a_non_checkpoint_raises(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelFormatError, match="state.json"):
        load_state(tmp_path / "x")


def test_a_state_of_another_fit_is_refused_not_ignored():
    from gmm_stream.exceptions import InvalidParameterError

    X = np.random.default_rng(0).standard_normal((300, 2))
    states = []
    GaussianMixture(2, n_init=3, max_iter=3, tol=0, random_state=0).fit(X, callback=states.append)
    last = states[-1]
    assert last.init == 2
    with pytest.raises(InvalidParameterError, match="initialisation 2, but this fit runs 1"):
        GaussianMixture(2, n_init=1, max_iter=3, tol=0, random_state=0).fit(X, resume_from=last)
    # a state kept by the callback does not grow with the later iterations
    assert [len(s.lower_bounds) for s in states[:3]] == [1, 2, 3]
