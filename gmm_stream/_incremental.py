"""Incremental EM over partitions of the data (Neal & Hinton 1998), for refreshes.

The data are split into partitions (files, row ranges: whatever the caller names by a
key). For each partition ``p`` the record keeps ``s_p``, its expected sufficient
statistics computed under the parameters of its last visit, and ``H_p``, the entropy
term of the distribution those parameters gave its latent variables (labels and missing
entries). The model's statistics are ``S = Σ_p s_p`` and its parameters ``M(S)``.

Visiting ``p`` replaces ``s_p`` by its statistics under the current parameters; the
M-step follows. Each visit and each M-step does not decrease the free energy (a lower
bound of the log-likelihood of all the data the record holds)

    F(θ) = Σ_p [Q(θ; s_p) + H_p] = Q(θ; S) + Σ_p H_p,

where ``Q(θ; s)`` is the expected complete-data log-likelihood, a linear function of the
statistics (:func:`expected_complete_loglik`). ``H_p`` is known at the visit without
computing any entropy: there the distribution is the exact posterior under ``θ_v``, so
``F_p(θ_v) = ℓ_p(θ_v)`` (the partition's log-likelihood, which the E-step returns) and
``H_p = ℓ_p(θ_v) − Q(θ_v; s_p)``. When every partition has been visited under the same
parameters, ``S`` is exactly the statistics of one batch E-step over all the data, and
``F`` its log-likelihood. The derivation is in docs/math.md ("Incremental EM").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._params import GaussianParams, log_det_cholesky, precisions_from_cholesky
from ._stats import LOG_2PI, SufficientStats

__all__ = ["PartitionStatistics", "expected_complete_loglik"]


def expected_complete_loglik(stats: SufficientStats, params: GaussianParams) -> float:
    """``Q(θ; s)``: the expected complete-data log-likelihood of the rows behind ``stats``.

    ``Σ_k [N_k (log π_k − ½ d log 2π + log det L_k) − ½ tr(P_k A_k)]`` with ``A_k`` the
    second moments of ``stats`` centred on ``μ_k`` (which include the conditional
    covariances of the missing entries); only the diagonal of ``A_k`` for 'diag' and
    'spherical' covariances.

    Parameters
    ----------
    stats : SufficientStats
    params : GaussianParams
        Any parameters of the same shapes (not necessarily those of the E-step).

    Returns
    -------
    float
    """
    p = params.astype(np.float64)
    kind, d = p.covariance_type, p.n_features
    centred = stats.recentred(p.means)
    logdet = np.broadcast_to(log_det_cholesky(p.precisions_cholesky, kind, d), stats.N.shape)
    with np.errstate(divide="ignore"):  # a weight of 0 only ever meets N_k = 0
        log_weights = np.log(p.weights)
    first = np.where(stats.N > 0, stats.N * (log_weights - 0.5 * d * LOG_2PI + logdet), 0.0)
    prec = precisions_from_cholesky(p.precisions_cholesky, kind)
    if kind == "full":
        trace = np.einsum("kij,kij->k", prec, centred.S2)
    elif kind == "tied":
        trace = np.einsum("ij,kij->k", prec, centred.S2)
    elif kind == "diag":
        trace = np.sum(prec * centred.S2, axis=1)
    else:
        trace = prec * centred.S2.sum(axis=1)
    return float(np.sum(first) - 0.5 * np.sum(trace))


@dataclass(frozen=True, eq=False)
class PartitionStatistics:
    """What incremental EM keeps of each partition: statistics, entropy term, last visit.

    Build it with :meth:`visited` (from an empty record, ``PartitionStatistics()``);
    every method returns a new record.

    Attributes
    ----------
    stats : dict of str to SufficientStats
        ``s_p`` of each partition, all centred on one common point.
    entropy : dict of str to float
        ``H_p`` of each partition (see the module docstring).
    visits : dict of str to int
        The refresh (``refreshes`` at the time) in which each partition was last visited;
        the stalest partitions have the smallest numbers.
    refreshes : int
        How many refreshes (calls of :meth:`visited` that start one) the record has seen.
    """

    stats: dict[str, SufficientStats] = field(default_factory=dict)
    entropy: dict[str, float] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    refreshes: int = 0

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def keys(self) -> list[str]:
        return list(self.stats)

    @property
    def n_rows(self) -> float:
        """Total weight of the usable rows the record holds."""
        return float(sum(s.n_rows for s in self.stats.values()))

    def total(self) -> SufficientStats:
        """``S = Σ_p s_p`` (raises ``ValueError`` for an empty record)."""
        if not self.stats:
            raise ValueError("the partition record is empty: there are no statistics to sum")
        return sum(self.stats.values())  # type: ignore[return-value]

    def free_energy(self, params: GaussianParams) -> float:
        """``F(θ) = Q(θ; S) + Σ_p H_p``: a lower bound of the log-likelihood of the data held,
        equal to it when every partition was last visited under ``params``."""
        return expected_complete_loglik(self.total(), params) + float(sum(self.entropy.values()))

    def visited(self, params: GaussianParams, new: Mapping[str, SufficientStats], *,
                refresh: int | None = None) -> PartitionStatistics:
        """The record after visiting the partitions of ``new`` under ``params`` (the
        parameters their E-step used); a key not yet in the record enters it.

        ``refresh`` is the visit number to stamp (default: ``refreshes``)."""
        if not new:
            return self
        stamp = self.refreshes if refresh is None else refresh
        center = next(iter(self.stats.values())).center if self.stats else next(iter(new.values())).center
        stats, entropy, visits = dict(self.stats), dict(self.entropy), dict(self.visits)
        for key, s in new.items():
            entropy[key] = float(s.loglik) - expected_complete_loglik(s, params)
            stats[key] = s.recentred(center)
            visits[key] = stamp
        return PartitionStatistics(stats, entropy, visits, self.refreshes)

    def removed(self, keys: Iterable[str]) -> PartitionStatistics:
        """The record without the partitions ``keys`` (unknown keys are ignored)."""
        gone = set(keys)
        return PartitionStatistics({k: v for k, v in self.stats.items() if k not in gone},
                                   {k: v for k, v in self.entropy.items() if k not in gone},
                                   {k: v for k, v in self.visits.items() if k not in gone}, self.refreshes)

    def next_refresh(self) -> PartitionStatistics:
        """The record with its refresh count advanced (at the start of a refresh)."""
        return replace(self, refreshes=self.refreshes + 1)

    def stalest(self, n: int, exclude: Iterable[str] = ()) -> list[str]:
        """The ``n`` partitions visited longest ago, leaving out ``exclude``; ties are taken in
        key order starting at a place that moves with ``refreshes``, so partitions last
        visited together are taken in turn over successive refreshes."""
        skip = set(exclude)
        keys = sorted(k for k in self.visits if k not in skip)
        if not keys:
            return []
        shift = self.refreshes % len(keys)
        turn = {k: (i - shift) % len(keys) for i, k in enumerate(keys)}
        return sorted(keys, key=lambda k: (self.visits[k], turn[k]))[: max(0, n)]

    def permuted(self, order: np.ndarray) -> PartitionStatistics:
        """The record with components reordered as a model permuted by ``order``."""
        order = np.asarray(order)
        stats = {k: replace(s, N=s.N[order], S1=s.S1[order], S2=s.S2[order], center=s.center[order])
                 for k, s in self.stats.items()}
        return replace(self, stats=stats)

    # ------------------------------------------------------------------ plain values

    def to_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The record as JSON-able metadata and stacked arrays (``partitions_<name>``)."""
        keys = self.keys
        meta = {"keys": keys, "visits": [int(self.visits[k]) for k in keys],
                "entropy": [float(self.entropy[k]) for k in keys], "refreshes": int(self.refreshes),
                "loglik": [float(self.stats[k].loglik) for k in keys],
                "n_rows": [float(self.stats[k].n_rows) for k in keys],
                "n_empty": [int(self.stats[k].n_empty) for k in keys]}
        stack = [self.stats[k] for k in keys]
        arrays = {f"partitions_{name}": np.stack([getattr(s, name) for s in stack]) for name in STACKED}
        arrays["partitions_feature_counts"] = arrays["partitions_feature_counts"].astype(np.int64)
        arrays["partitions_center"] = stack[0].center.astype(np.float64)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: Mapping[str, Any], arrays: Mapping[str, Any]) -> PartitionStatistics:
        """The record of :meth:`to_state` (checked by :mod:`gmm_stream._state`)."""
        center = np.asarray(arrays["partitions_center"], dtype=np.float64)
        stats, entropy, visits = {}, {}, {}
        for i, key in enumerate(meta["keys"]):
            stats[key] = SufficientStats(
                np.asarray(arrays["partitions_N"][i], dtype=np.float64),
                np.asarray(arrays["partitions_S1"][i], dtype=np.float64),
                np.asarray(arrays["partitions_S2"][i], dtype=np.float64), center,
                float(meta["loglik"][i]), float(meta["n_rows"][i]), int(meta["n_empty"][i]),
                np.asarray(arrays["partitions_feature_counts"][i], dtype=np.int64))
            entropy[key] = float(meta["entropy"][i])
            visits[key] = int(meta["visits"][i])
        return cls(stats, entropy, visits, int(meta["refreshes"]))


#: the per-partition arrays of a saved record, stacked along a first axis of partitions
STACKED = ("N", "S1", "S2", "feature_counts")
