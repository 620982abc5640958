"""Which partitions of a source a refresh reads: new, changed, removed and stalest ones.

A model directory written by a flow keeps ``partitions.json``: the identity of every
partition of the input (a Parquet file, a row chunk of a Zarr array, an AnnData file; see
:meth:`pipeline.sources.Source.partitions`) when its statistics were last computed. The
statistics themselves are the model's partition record (``GaussianMixture.partitions_``,
saved with the model). :func:`plan_refresh` compares the source as it is now with that
record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipeline.formats as formats
from gmm_stream import PartitionStatistics
from gmm_stream.exceptions import ModelFormatError
from pipeline.sources.base import Partition

__all__ = ["PARTITIONS_FILE", "RefreshPlan", "partition_identities", "plan_refresh", "check_record"]

PARTITIONS_FILE = "partitions.json"


def partition_identities(partitions: Sequence[Partition]) -> dict[str, Any]:
    """The content of ``partitions.json``: the format stamp and each partition's identity by key."""
    return {**formats.stamp("partitions"), "partitions": {p.key: p.identity for p in partitions}}


def check_record(identities: Mapping[str, Any], record: PartitionStatistics, where: str | Path) -> None:
    """The partitions of ``partitions.json`` are those of the model's partition record.

    Raises
    ------
    ModelFormatError
        Naming the file and the keys that differ.
    """
    stored, kept = set(identities), set(record.keys)
    if stored != kept:
        raise ModelFormatError(
            f"{where}: {PARTITIONS_FILE} names partitions {sorted(stored ^ kept)[:5]} that the model's partition "
            "record does not hold (or the reverse); the model directory is damaged: run the fit job again"
        )


@dataclass(frozen=True)
class RefreshPlan:
    """What a refresh reads and drops.

    Attributes
    ----------
    new, changed, stale : list of str
        Keys of the partitions to visit: not in the record, changed since their last
        visit, and unchanged ones visited longest ago (``stale_partitions`` of them).
    removed : list of str
        Keys of the record whose partition is gone: their statistics are subtracted.
    rows : dict of str to (int, int)
        The row range of every partition to visit, in the opened matrix.
    unchanged : int
        Partitions kept as they are.
    """

    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    unchanged: int = 0

    @property
    def visit(self) -> list[str]:
        return [*self.new, *self.changed, *self.stale]

    def to_dict(self) -> dict[str, Any]:
        return {"new": self.new, "changed": self.changed, "stale": self.stale, "removed": self.removed,
                "unchanged": self.unchanged,
                "rows_read": int(sum(b - a for a, b in self.rows.values()))}


def plan_refresh(partitions: Sequence[Partition], identities: Mapping[str, Any], record: PartitionStatistics,
                 stale_partitions: int = 0) -> RefreshPlan:
    """Compare the source's ``partitions`` now with the stored ``identities`` of the record.

    A partition whose identity is unknown (None) counts as changed: it is always read.
    """
    now = {p.key: p for p in partitions}
    new = [k for k in now if k not in identities]
    changed = [k for k in now if k in identities and not now[k].unchanged(identities[k])]
    removed = [k for k in identities if k not in now]
    fresh = set(new) | set(changed)
    stale = record.stalest(stale_partitions, exclude=fresh | set(removed))
    visit = [*new, *changed, *stale]
    rows = {k: (now[k].start, now[k].stop) for k in visit}
    return RefreshPlan(new, changed, stale, removed, rows, len(now) - len(visit))
