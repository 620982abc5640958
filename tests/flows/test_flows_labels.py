"""Label continuity in the flows: label_components returns a relabelled copy of a fitted model.

The matching math, and GaussianMixture.permuted, are tested in tests/test_matching.py.
"""

from __future__ import annotations

import numpy as np

from flows.labels import label_components
from gmm_stream import GaussianMixture
from gmm_stream.matching import contingency

from flows_testing import small_data


def fitted(seed: int, n: int = 900) -> tuple[np.ndarray, GaussianMixture]:
    data = small_data(n=n, d=2, k=3, seed=seed)
    return data.X, GaussianMixture(3, random_state=1).fit(data.X)


def test_label_components_without_reference_sorts_by_weight_in_a_copy():
    X, gm = fitted(seed=4)
    weights = gm.weights_.copy()
    labelled, matching = label_components(gm)
    assert labelled is not gm and matching.reference is None
    assert np.all(np.diff(labelled.weights_) <= 0)
    np.testing.assert_array_equal(labelled.weights_, weights[matching.order])
    np.testing.assert_array_equal(gm.weights_, weights)  # the fitted model is unchanged


def test_label_components_with_order_none_keeps_the_fitted_order():
    X, gm = fitted(seed=4)
    labelled, matching = label_components(gm, order="none")
    assert matching.order == [0, 1, 2]
    np.testing.assert_array_equal(labelled.means_, gm.means_)


def test_label_components_follows_a_permuted_reference():
    X, gm = fitted(seed=5)
    reference = GaussianMixture(3, random_state=1).fit(X).permuted([2, 0, 1])
    labelled, matching = label_components(gm, reference=reference, reference_name="ref")
    assert matching.order == [2, 0, 1] and matching.distance == "bhattacharyya"
    np.testing.assert_array_equal(labelled.predict(X), reference.predict(X))
    # by the rows they share: the same order
    overlap = contingency(gm.predict(X), reference.predict(X), 3, 3)
    by_rows, matching = label_components(gm, reference=reference, reference_name="ref", overlap=overlap)
    assert matching.order == [2, 0, 1] and matching.distance == "overlap" and matching.total_cost == 1.0
    np.testing.assert_array_equal(by_rows.predict(X), reference.predict(X))


