"""Label continuity in the flows: label_components relabels a fitted model as the job asks.

The matching math is tested in tests/test_matching.py.
"""

from __future__ import annotations

import numpy as np

from gmm_stream import GaussianMixture
from gmm_stream.matching import contingency
from flows.labels import label_components
from flows_testing import small_data


def test_label_components_without_reference_sorts_by_weight():
    data = small_data(n=900, d=2, k=3, seed=4)
    gm = GaussianMixture(3, random_state=1).fit(data.X)
    matching = label_components(gm)
    assert np.all(np.diff(gm.weights_) <= 0) and matching.reference is None


def test_label_components_with_order_none_keeps_the_fitted_order():
    data = small_data(n=900, d=2, k=3, seed=4)
    gm = GaussianMixture(3, random_state=1).fit(data.X)
    weights = gm.weights_.copy()
    matching = label_components(gm, order="none")
    assert matching.order == [0, 1, 2]
    np.testing.assert_array_equal(gm.weights_, weights)


def test_label_components_follows_a_permuted_reference():
    data = small_data(n=900, d=2, k=3, seed=5)
    gm = GaussianMixture(3, random_state=1).fit(data.X)
    before = gm.predict(data.X)
    reference = GaussianMixture(3, random_state=1).fit(data.X)
    reference.permute_components([2, 0, 1])
    matching = label_components(gm, reference=reference, reference_name="ref")
    assert matching.order == [2, 0, 1] and matching.distance == "bhattacharyya"
    np.testing.assert_array_equal(gm.predict(data.X), reference.predict(data.X))
    # by the rows they share: the same order
    overlap = contingency(before, reference.predict(data.X), 3, 3)
    fresh = GaussianMixture(3, random_state=1).fit(data.X)
    by_rows = label_components(fresh, reference=reference, reference_name="ref", overlap=overlap)
    assert by_rows.order == [2, 0, 1] and by_rows.distance == "overlap" and by_rows.total_cost == 1.0
