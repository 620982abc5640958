"""The documented policy for a component that receives no responsibility: it keeps its
previous mean and covariance, gets weight ≈ 0, and an EmptyComponentWarning is issued —
never a NaN."""

from __future__ import annotations

import numpy as np
import pytest

from gmm_stream import GaussianMixture
from gmm_stream.exceptions import EmptyComponentWarning

pytestmark = pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_component_far_from_all_data_is_kept_not_nan(covariance_type):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(5, 1, (200, 2))])
    means = np.array([[0.0, 0.0], [5.0, 5.0], [1e4, 1e4]])  # the third is ~1e8 σ² away
    gm = GaussianMixture(3, covariance_type=covariance_type, means_init=means, max_iter=5, tol=0)
    with pytest.warns(EmptyComponentWarning, match=r"component\(s\) \[2\]"):
        gm.fit(X)
    assert np.all(np.isfinite(gm.means_)) and np.all(np.isfinite(gm.covariances_))
    np.testing.assert_array_equal(gm.means_[2], means[2])
    assert gm.weights_[2] < 1e-12
    np.testing.assert_allclose(gm.weights_.sum(), 1.0)
    assert np.all(np.isfinite(gm.score_samples(X)))
