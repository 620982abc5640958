"""Label continuity: canonical order, the Bhattacharyya distance, Hungarian matching, permutations."""

from __future__ import annotations

import numpy as np
import pytest

from gmm_stream import GaussianMixture, GaussianParams
from flows.exceptions import LabelMatchingError
from flows.labels import (
    canonical_order,
    contingency,
    distance_matrix,
    full_covariances,
    label_components,
    match_by_overlap,
    match_to_reference,
    permute_params,
    reorder_model,
)
from flows_testing import small_data


def random_params(k: int, d: int, covariance_type: str, seed: int = 0) -> GaussianParams:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(k))
    means = rng.normal(0, 5, (k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ a.transpose(0, 2, 1) + d * np.eye(d)
    cov = {"full": full, "tied": full[0], "diag": np.einsum("kii->ki", full), "spherical": full[:, 0, 0]}[covariance_type]
    return GaussianParams.from_covariances(weights, means, cov, covariance_type)


def test_bhattacharyya_matches_the_one_dimensional_closed_form():
    # D_B = (m1-m2)^2 / (4 (s1+s2)) + 1/2 ln((s1+s2) / (2 sqrt(s1 s2))) for variances s1, s2
    a = GaussianParams.from_covariances([1.0], [[0.3]], [[2.0]], "diag")
    b = GaussianParams.from_covariances([1.0], [[-1.2]], [[0.5]], "diag")
    expected = (0.3 + 1.2) ** 2 / (4 * 2.5) + 0.5 * np.log(2.5 / (2 * np.sqrt(1.0)))
    np.testing.assert_allclose(distance_matrix(a, b)[0, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(distance_matrix(a, a)[0, 0], 0.0, atol=1e-12)
    maha = distance_matrix(a, b, "mahalanobis")[0, 0]
    np.testing.assert_allclose(maha, 1.5 / np.sqrt(0.5), rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_matching_recovers_a_permutation(covariance_type):
    params = random_params(5, 3, covariance_type)
    perm = np.array([3, 0, 4, 1, 2])
    shuffled = permute_params(params, perm)  # shuffled component j = params component perm[j]
    matching = match_to_reference(shuffled, params)
    # label j of the result must be params' component j: shuffled index i with perm[i] == j
    np.testing.assert_array_equal(perm[matching.order], np.arange(5))
    assert matching.total_cost == pytest.approx(0.0, abs=1e-9)
    relabelled = permute_params(shuffled, matching.order)
    for name in ("weights", "means", "covariances", "precisions_cholesky"):
        np.testing.assert_allclose(getattr(relabelled, name), getattr(params, name), rtol=1e-12)


def test_matching_with_more_and_fewer_components():
    ref = random_params(3, 2, "full", seed=1)
    bigger = GaussianParams.from_covariances(
        np.r_[ref.weights * 0.9, 0.1], np.vstack([ref.means, [[50.0, 50.0]]]),
        np.concatenate([ref.covariances, np.eye(2)[None]]), "full")
    more = match_to_reference(permute_params(bigger, [3, 2, 1, 0]), ref)
    assert [p["reference_label"] for p in more.pairs] == [0, 1, 2, None] and "no counterpart" in more.note
    fewer = match_to_reference(ref, bigger)
    assert [p["reference_label"] for p in fewer.pairs] == [0, 1, 2]


def test_matching_refuses_different_features():
    with pytest.raises(LabelMatchingError, match="features"):
        match_to_reference(random_params(2, 2, "full"), random_params(2, 3, "full"))


def test_canonical_order_is_by_decreasing_weight_then_means():
    params = GaussianParams.from_covariances([0.2, 0.4, 0.4], [[0.0], [2.0], [1.0]], [[1.0], [1.0], [1.0]], "diag")
    assert canonical_order(params).tolist() == [2, 1, 0]


def test_full_covariances_of_every_type():
    for kind in ("full", "tied", "diag", "spherical"):
        p = random_params(3, 2, kind)
        full = full_covariances(p)
        assert full.shape == (3, 2, 2)
        np.testing.assert_allclose(full[1], p.covariances if kind == "tied" else full[1])


def test_reordered_model_predicts_permuted_labels():
    data = small_data(n=600, d=2, k=3)
    gm = GaussianMixture(3, random_state=0).fit(data.X)
    before = gm.predict(data.X)
    proba = gm.predict_proba(data.X)
    order = [2, 0, 1]
    reorder_model(gm, order)
    new_of_old = np.argsort(order)
    np.testing.assert_array_equal(gm.predict(data.X), new_of_old[before])
    np.testing.assert_allclose(gm.predict_proba(data.X), proba[:, order], rtol=1e-12)


def test_label_components_without_reference_sorts_by_weight():
    data = small_data(n=900, d=2, k=3, seed=4)
    gm = GaussianMixture(3, random_state=1).fit(data.X)
    matching = label_components(gm)
    assert np.all(np.diff(gm.weights_) <= 0) and matching.reference is None


def test_overlap_matching_keeps_the_most_rows_of_every_permutation():
    """Against a brute force over every assignment of 4 new to 4 (and 3, and 5) reference labels."""
    import itertools

    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, 5000)
    flip = rng.random(5000) < 0.35
    new = np.where(flip, rng.integers(0, 4, 5000), np.array([2, 0, 3, 1])[ref])  # noisy relabelling
    params = random_params(4, 2, "full")
    for k_ref in (3, 4, 5):
        ref_k = np.minimum(ref, k_ref - 1)
        counts = contingency(new, ref_k, 4, k_ref)
        np.testing.assert_array_equal(counts.sum(), 5000)
        matching = match_by_overlap(params, counts)
        kept = sum(counts[i, p["reference_label"]] for i, p in zip(matching.order, matching.pairs)
                   if p["reference_label"] is not None)
        best = max(sum(counts[i, j] for i, j in zip(perm_new, perm_ref))
                   for perm_new in itertools.permutations(range(4), min(4, k_ref))
                   for perm_ref in [range(min(4, k_ref))])
        best = max(best, max(sum(counts[i, j] for i, j in zip(range(4), perm))
                             for perm in itertools.permutations(range(k_ref), min(4, k_ref))))
        assert kept == best
        np.testing.assert_allclose(matching.total_cost, best / 5000)
        assert sorted(matching.order) == list(range(4))


def test_contingency_ignores_rows_without_a_label():
    counts = contingency(np.array([0, 1, -1, 1]), np.array([1, 1, 0, -1]), 2, 2)
    np.testing.assert_array_equal(counts, [[0, 1], [0, 1]])
