"""Component matching (gmm_stream.matching) against independent brute-force computations,
and GaussianMixture.permuted, which applies a matching to a copy of a fitted model.

The distances are recomputed per pair from their formulas with ``scipy.linalg`` (explicit
determinants and inverses, not the log-determinants and solves of the library) and, in one
dimension, from the Bhattacharyya coefficient integrated numerically; the Hungarian
assignment is checked against a search over every assignment for small K.
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from scipy import integrate
from scipy.spatial.distance import mahalanobis as scipy_mahalanobis
from scipy.stats import norm
from sklearn.exceptions import NotFittedError

from gmm_stream import GaussianMixture, GaussianParams
from gmm_stream.exceptions import ComponentMatchingError, InvalidParameterError
from gmm_stream.matching import (
    canonical_order,
    contingency,
    distance_matrix,
    full_covariances,
    match_by_overlap,
    match_to_reference,
)

from gmm_testing import COVARIANCE_TYPES, add_missing, make_mixture, random_params
from reference import full_covariances as reference_full_covariances


def make_params(k: int, d: int, covariance_type: str, seed: int = 0) -> GaussianParams:
    return GaussianParams.from_covariances(*random_params(d, k, covariance_type, seed), covariance_type)


def brute_bhattacharyya(m1, S1, m2, S2) -> float:
    """D_B = 1/8 Δᵀ S⁻¹ Δ + 1/2 ln(det S / sqrt(det S1 det S2)), S = (S1 + S2)/2."""
    S = (S1 + S2) / 2
    diff = m1 - m2
    return (diff @ scipy.linalg.inv(S) @ diff / 8
            + np.log(scipy.linalg.det(S) / np.sqrt(scipy.linalg.det(S1) * scipy.linalg.det(S2))) / 2)


def brute_distances(new: GaussianParams, ref: GaussianParams, distance: str) -> np.ndarray:
    d = new.n_features
    c_new = reference_full_covariances(new.covariances, new.covariance_type, new.n_components, d)
    c_ref = reference_full_covariances(ref.covariances, ref.covariance_type, ref.n_components, d)
    out = np.empty((new.n_components, ref.n_components))
    for i, j in itertools.product(range(new.n_components), range(ref.n_components)):
        if distance == "bhattacharyya":
            out[i, j] = brute_bhattacharyya(new.means[i], c_new[i], ref.means[j], c_ref[j])
        else:
            out[i, j] = scipy_mahalanobis(new.means[i], ref.means[j], scipy.linalg.inv(c_ref[j]))
    return out


def brute_best_assignment(cost: np.ndarray) -> tuple[float, set[tuple[int, int]]]:
    """The least total cost over every one-to-one pairing of min(K_new, K_ref) pairs, and its pairs."""
    k_new, k_ref = cost.shape
    if k_new <= k_ref:
        candidates = ([(i, j) for i, j in zip(range(k_new), cols)]
                      for cols in itertools.permutations(range(k_ref), k_new))
    else:
        candidates = ([(i, j) for i, j in zip(rows, range(k_ref))]
                      for rows in itertools.permutations(range(k_new), k_ref))
    best = min(candidates, key=lambda pairs: sum(cost[i, j] for i, j in pairs))
    return float(sum(cost[i, j] for i, j in best)), set(best)


# ------------------------------------------------------------------------------ distances


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("distance", ["bhattacharyya", "mahalanobis"])
def test_distance_matrix_equals_the_formula_per_pair(covariance_type, distance):
    new, ref = make_params(4, 3, covariance_type, seed=1), make_params(3, 3, "full", seed=2)
    expected = brute_distances(new, ref, distance)
    np.testing.assert_allclose(distance_matrix(new, ref, distance), expected, rtol=1e-10)
    np.testing.assert_allclose(distance_matrix(ref, new, distance), brute_distances(ref, new, distance), rtol=1e-10)


def test_bhattacharyya_is_minus_the_log_of_the_integrated_coefficient():
    # D_B = -ln ∫ sqrt(p(x) q(x)) dx, integrated numerically in one dimension
    new, ref = make_params(3, 1, "diag", seed=3), make_params(2, 1, "spherical", seed=4)
    computed = distance_matrix(new, ref)
    for i, j in itertools.product(range(3), range(2)):
        p = norm(new.means[i, 0], np.sqrt(new.covariances[i, 0]))
        q = norm(ref.means[j, 0], np.sqrt(ref.covariances[j]))
        coefficient, _ = integrate.quad(lambda x, p=p, q=q: np.sqrt(p.pdf(x) * q.pdf(x)), -np.inf, np.inf, epsabs=1e-13)
        np.testing.assert_allclose(computed[i, j], -np.log(coefficient), rtol=1e-8, atol=1e-12)


def test_distance_of_a_component_to_itself_is_zero_and_bhattacharyya_is_symmetric():
    a, b = make_params(3, 4, "full", seed=5), make_params(3, 4, "full", seed=6)
    np.testing.assert_allclose(np.diag(distance_matrix(a, a)), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(distance_matrix(a, a, "mahalanobis")), 0.0, atol=1e-12)
    np.testing.assert_allclose(distance_matrix(a, b), distance_matrix(b, a).T, rtol=1e-12)


def test_distance_matrix_refuses_different_features_and_unknown_distances():
    with pytest.raises(ComponentMatchingError, match="features"):
        distance_matrix(make_params(2, 2, "full"), make_params(2, 3, "full"))
    with pytest.raises(InvalidParameterError, match="unknown distance 'euclid'"):
        distance_matrix(make_params(2, 2, "full"), make_params(2, 2, "full"), "euclid")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_full_covariances_equal_the_reference_expansion(covariance_type):
    p = make_params(3, 4, covariance_type, seed=7)
    np.testing.assert_array_equal(full_covariances(p),
                                  reference_full_covariances(p.covariances, covariance_type, 3, 4))


# ----------------------------------------------------------------------------- assignment


@pytest.mark.parametrize(("k_new", "k_ref"), [(4, 4), (5, 3), (3, 5), (1, 4), (4, 1)])
@pytest.mark.parametrize("distance", ["bhattacharyya", "mahalanobis"])
def test_matching_is_the_cheapest_of_every_assignment(k_new, k_ref, distance):
    new, ref = make_params(k_new, 2, "full", seed=10 + k_new), make_params(k_ref, 2, "diag", seed=20 + k_ref)
    best_cost, best_pairs = brute_best_assignment(brute_distances(new, ref, distance))
    matching = match_to_reference(new, ref, distance, reference_name="yesterday")
    assert matching.reference == "yesterday" and matching.distance == distance
    assert sorted(matching.order) == list(range(k_new))
    pairs = {(i, p["reference_label"]) for i, p in zip(matching.order, matching.pairs)
             if p["reference_label"] is not None}
    assert pairs == best_pairs
    np.testing.assert_allclose(matching.total_cost, best_cost, rtol=1e-10)
    matched = [p["reference_label"] for p in matching.pairs if p["reference_label"] is not None]
    assert matched == sorted(matched)  # matched labels keep the reference's order
    if k_new >= k_ref:  # label j is the reference's label j; the extra ones follow, in canonical order
        assert [p["reference_label"] for p in matching.pairs] == list(range(k_ref)) + [None] * (k_new - k_ref)
        unmatched = matching.order[k_ref:]
        assert unmatched == [i for i in canonical_order(new).tolist() if i in unmatched]
    assert ("no counterpart" in matching.note) == (k_new > k_ref)
    assert (f"renumbered 0..{k_new - 1}" in matching.note) == (k_new < k_ref)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_matching_recovers_a_permutation(covariance_type):
    params = make_params(5, 3, covariance_type)
    perm = np.array([3, 0, 4, 1, 2])
    shuffled = params.permute(perm)  # shuffled component j = params component perm[j]
    matching = match_to_reference(shuffled, params)
    # label j of the result must be params' component j: shuffled index i with perm[i] == j
    np.testing.assert_array_equal(perm[matching.order], np.arange(5))
    assert matching.total_cost == pytest.approx(0.0, abs=1e-9)
    relabelled = shuffled.permute(matching.order)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_allclose(getattr(relabelled, name), getattr(params, name), rtol=1e-12)


def test_canonical_order_is_by_decreasing_weight_then_means():
    params = GaussianParams.from_covariances([0.2, 0.4, 0.4], [[0.0], [2.0], [1.0]], [[1.0], [1.0], [1.0]], "diag")
    assert canonical_order(params).tolist() == [2, 1, 0]
    p = make_params(6, 3, "full", seed=8)
    brute = sorted(range(6), key=lambda k: (-round(float(p.weights[k]), 12), tuple(p.means[k])))
    assert canonical_order(p).tolist() == brute


# -------------------------------------------------------------------- matching by overlap


def test_contingency_counts_every_pair_of_labels():
    rng = np.random.default_rng(2)
    new, ref = rng.integers(-1, 4, 3000), rng.integers(-1, 5, 3000)
    counts = contingency(new, ref, 4, 3)  # reference label 3 and 4 are out of range: not counted
    brute = np.zeros((4, 3), dtype=np.int64)
    for i, j in zip(new, ref):
        if 0 <= i < 4 and 0 <= j < 3:
            brute[i, j] += 1
    np.testing.assert_array_equal(counts, brute)


def test_contingency_ignores_rows_without_a_label():
    counts = contingency(np.array([0, 1, -1, 1]), np.array([1, 1, 0, -1]), 2, 2)
    np.testing.assert_array_equal(counts, [[0, 1], [0, 1]])


@pytest.mark.parametrize("k_ref", [3, 4, 5])
def test_overlap_matching_keeps_the_most_rows_of_every_assignment(k_ref):
    rng = np.random.default_rng(3)
    ref = np.minimum(rng.integers(0, 4, 5000), k_ref - 1)
    flip = rng.random(5000) < 0.35
    new = np.where(flip, rng.integers(0, 4, 5000), np.array([2, 0, 3, 1, 1])[ref])  # noisy relabelling
    counts = contingency(new, ref, 4, k_ref)
    assert counts.sum() == 5000
    best_negative, best_pairs = brute_best_assignment(-counts.astype(np.float64))
    matching = match_by_overlap(make_params(4, 2, "full"), counts, reference_name="previous")
    pairs = {(i, p["reference_label"]) for i, p in zip(matching.order, matching.pairs)
             if p["reference_label"] is not None}
    kept = sum(counts[i, j] for i, j in pairs)
    assert kept == -best_negative and pairs == best_pairs
    np.testing.assert_allclose(matching.total_cost, kept / 5000)
    assert sorted(matching.order) == list(range(4)) and matching.distance == "overlap"
    assert [p["shared_rows"] for p in matching.pairs] == [int(counts[i, p["reference_label"]])
                                                         if p["reference_label"] is not None else 0
                                                         for i, p in zip(matching.order, matching.pairs)]


def test_overlap_matching_without_shared_rows_keeps_nothing():
    matching = match_by_overlap(make_params(2, 2, "full"), np.zeros((2, 2)))
    assert matching.total_cost == 0.0 and sorted(matching.order) == [0, 1]


def test_matching_imports_nothing_of_the_data_or_orchestration_layers():
    code = ("import sys, gmm_stream.matching; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pipeline', 'flows', 'prefect'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------- applying a matching

_FITTED = ("converged_", "n_iter_", "lower_bound_", "lower_bounds_", "n_features_in_", "feature_names_in_",
           "n_empty_rows_")
_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


@pytest.fixture(scope="module")
def mixture_frame():
    X, *_ = make_mixture(600, 3, 3, seed=31)
    X = add_missing(X, 0.1, seed=32)
    X[:3] = np.nan  # rows with no observed value
    return pd.DataFrame(X, columns=["a", "b", "c"])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_permuted_is_a_relabelled_copy_and_the_model_is_untouched(mixture_frame, covariance_type):
    X = mixture_frame
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(X)
    params, state = gm.params_, dict(gm.__dict__)
    arrays = {name: np.array(getattr(gm, name), copy=True) for name in _ARRAYS}
    fitted = {name: np.array(getattr(gm, name), copy=True) for name in _FITTED}
    labels, proba, logdens = gm.predict(X), gm.predict_proba(X), gm.score_samples(X)
    order = [2, 0, 1]

    new = gm.permuted(order)

    assert new is not gm and type(new) is GaussianMixture
    # the original: the same object state, the same parameters object, the same numbers
    assert gm.params_ is params and gm.__dict__.keys() == state.keys()
    assert all(gm.__dict__[key] is value for key, value in state.items())
    for name in _ARRAYS:
        np.testing.assert_array_equal(getattr(gm, name), arrays[name])
    np.testing.assert_array_equal(gm.predict(X), labels)
    # the copy: every fitted attribute, the constructor parameters, the permuted components
    assert new.get_params() == gm.get_params()
    for name in _FITTED:
        np.testing.assert_array_equal(getattr(new, name), fitted[name], err_msg=name)
    np.testing.assert_array_equal(new.weights_, arrays["weights_"][order])
    np.testing.assert_array_equal(new.means_, arrays["means_"][order])
    if covariance_type == "tied":
        np.testing.assert_array_equal(new.covariances_, arrays["covariances_"])
    else:
        np.testing.assert_array_equal(new.covariances_, arrays["covariances_"][order])
    np.testing.assert_array_equal(new.predict(X), np.where(labels >= 0, np.argsort(order)[labels], -1))
    np.testing.assert_allclose(new.predict_proba(X), proba[:, order], rtol=1e-12)
    np.testing.assert_allclose(new.score_samples(X), logdens, rtol=1e-12)
    # no array is shared: changing the copy in place leaves the model as it was
    for name in _ARRAYS + ("lower_bounds_", "feature_names_in_"):
        assert not np.shares_memory(getattr(new, name), getattr(gm, name)), name
    new.covariances_[...] = 0.0
    new.feature_names_in_[0] = "z"
    np.testing.assert_array_equal(gm.covariances_, arrays["covariances_"])
    assert list(gm.feature_names_in_) == ["a", "b", "c"]


def test_permuted_refuses_what_is_not_a_permutation_of_a_fitted_model(mixture_frame):
    with pytest.raises(NotFittedError):
        GaussianMixture(2).permuted([1, 0])
    gm = GaussianMixture(3, random_state=0).fit(mixture_frame.to_numpy())
    with pytest.raises(InvalidParameterError, match="not a permutation of 0..2"):
        gm.permuted([0, 0, 1])
    with pytest.raises(InvalidParameterError, match="not a permutation of 0..2"):
        gm.permuted([0, 1])


def test_permute_components_is_deprecated_and_relabels_in_place(mixture_frame):
    gm = GaussianMixture(3, random_state=0).fit(mixture_frame.to_numpy())
    expected = gm.permuted([1, 2, 0])
    with pytest.warns(DeprecationWarning, match="permuted"):
        assert gm.permute_components([1, 2, 0]) is gm
    np.testing.assert_array_equal(gm.means_, expected.means_)
    np.testing.assert_array_equal(gm.precisions_cholesky_, expected.precisions_cholesky_)
