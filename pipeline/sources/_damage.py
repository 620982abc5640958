"""Damaged inputs are errors, never values: the checks and read wrappers the sources share.

Zarr reads a chunk whose file is missing as the fill value, and codecs, pyarrow and h5py
report damaged bytes with errors that name neither the file nor the chunk. This module

- tells damage from other failures (:func:`is_damage`);
- lists a Zarr store's keys once and compares them with the chunk (or shard) keys an array
  needs (:func:`check_chunks`, used at open where listing is cheap: local directories,
  zip files, memory stores);
- views a Zarr array through a store whose ``get`` raises for a missing chunk key and
  checks Blosc frame lengths (:class:`CheckingStore`, :func:`checked_array`; used at read
  time on every store, remote ones included, at no extra request: the check rides on the
  read zarr makes anyway);
- reads Zarr arrays block by block for :func:`dask.array.from_array` and turns a failed
  block into a :class:`~pipeline.exceptions.MissingChunkError` or
  :class:`~pipeline.exceptions.DamagedInputError` naming the chunk file, its index and its
  rows (:class:`ZarrBlocks`, :func:`lazy_blocks`).
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize
from zarr.abc.store import ByteRequest, Store
from zarr.codecs import BloscCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, LocalStore, MemoryStore, StorePath, WrapperStore, ZipStore

from pipeline.exceptions import DamagedInputError, MissingChunkError, PipelineError

__all__ = [
    "DAMAGE_ERRORS",
    "RESTORE",
    "is_damage",
    "describe_error",
    "CheckingStore",
    "MissingKey",
    "TruncatedFrame",
    "checked_array",
    "open_store",
    "cheap_listing",
    "ChunkLayout",
    "check_chunks",
    "missing_key_error",
    "first_failing_rows",
    "ZarrBlocks",
    "XarrayBlocks",
    "lazy_blocks",
]

#: What codecs (zstd, blosc, gzip/zlib, crc32c), zarr's chunk decoding (e.g. "cannot reshape
#: array of size 48 into shape (32, 3)" for a truncated uncompressed chunk), pyarrow (thrift,
#: page and snappy errors are OSError or ArrowInvalid, a ValueError) and h5py (OSError)
#: raise for bytes they cannot decode.
DAMAGE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ValueError, OSError, EOFError, zlib.error)

#: Failures that are not damage although they are OSError/RuntimeError: access and network
#: problems (retrying or fixing permissions helps, restoring the file does not), features a
#: library does not implement, and our own errors.
_NOT_DAMAGE: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, PermissionError, FileNotFoundError, IsADirectoryError,
    NotImplementedError, RecursionError, MemoryError, PipelineError,
)

#: What to do about a damaged file, appended to every message.
RESTORE = "re-create or restore the file"

#: The same for a Zarr chunk file: one file of a store.
_RESTORE_CHUNK = f"{RESTORE} (restore the chunk file from a backup, or write the whole store again)"


def is_damage(err: BaseException) -> bool:
    """Whether ``err`` (raised while reading stored bytes) means the bytes are damaged."""
    return isinstance(err, DAMAGE_ERRORS) and not isinstance(err, _NOT_DAMAGE)


def describe_error(err: BaseException) -> str:
    """``"Type: message"`` of the original error, on one line (``zlib.error``, not ``error``)."""
    cls = type(err)
    name = cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    text = " ".join(str(err).split())
    return f"{name}: {text}" if text else name


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python number it holds (``0.0``, not ``np.float64(0.0)``)."""
    return value.item() if isinstance(value, np.generic) else value


# ------------------------------------------------------------------ Zarr: missing keys


_METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})


def _is_chunk_key(key: str) -> bool:
    return key.rsplit("/", 1)[-1] not in _METADATA_NAMES


class MissingKey(Exception):
    """A chunk key is not in the store (raised by :class:`CheckingStore`, turned into
    :class:`~pipeline.exceptions.MissingChunkError` by the readers)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class TruncatedFrame(ValueError):
    """A Blosc chunk shorter (or longer) than its own header says: damage (a ValueError)."""


def _ends_with_blosc(array: zarr.Array) -> bool:
    """Whether the stored bytes of each chunk are one Blosc frame (the last codec is Blosc)."""
    metadata = array.metadata
    if getattr(metadata, "zarr_format", None) == 2:
        compressor = getattr(metadata, "compressor", None)
        return getattr(compressor, "codec_id", None) == "blosc"
    codecs = tuple(getattr(metadata, "codecs", ()) or ())
    return bool(codecs) and isinstance(codecs[-1], BloscCodec)


def _check_blosc_frame(key: str, value: Buffer) -> None:
    """Blosc's decompressor trusts the sizes in its 16-byte header: a truncated frame whose
    data were stored uncompressed (incompressible data, e.g. random floats with lz4) decodes
    into garbage without an error. Compare the header's compressed size with the bytes read."""
    size = len(value)
    stored = int.from_bytes(value.as_numpy_array()[:16].tobytes()[12:16], "little") if size >= 16 else -1
    if stored != size:
        raise TruncatedFrame(
            f"chunk file {key!r} holds {size} bytes but its Blosc header records "
            f"{stored if stored >= 0 else 'at least 16'}: the file is truncated or overwritten"
        )


class CheckingStore(WrapperStore[Store]):
    """A store that refuses what zarr would silently turn into values.

    - ``raise_missing``: ``get`` of a missing chunk key raises :class:`MissingKey`. Zarr asks
      the store for every chunk it reads and fills the chunk with the fill value when the
      answer is "absent"; raising instead turns a deleted chunk into an error at the read
      that needs it, without an extra request. Metadata keys (``zarr.json``, ``.zarray``,
      ...) may be absent as usual: zarr probes for them.
    - arrays registered with :meth:`watch` whose chunks are Blosc frames: a whole-chunk
      read whose length differs from the frame header raises :class:`TruncatedFrame`.
    """

    def __init__(self, store: Store, *, raise_missing: bool = True, blosc: Iterable[str] = ()) -> None:
        super().__init__(store)
        self.raise_missing = raise_missing
        self.blosc = set(blosc)  # array paths whose chunks are Blosc frames

    def _with_store(self, store: Store) -> CheckingStore:
        clone = type(self)(store, raise_missing=self.raise_missing)
        clone.blosc = self.blosc  # shared: arrays watched later are checked through every view
        return clone

    def watch(self, array: zarr.Array) -> None:
        """Check the Blosc frames of ``array`` (a no-op for other codecs and for sharded arrays)."""
        if _ends_with_blosc(array):
            self.blosc.add(array.path)

    def _check(self, key: str, value: Buffer | None, byte_range: ByteRequest | None) -> None:
        if value is None:
            if self.raise_missing and _is_chunk_key(key):
                raise MissingKey(key)
            return
        if byte_range is None and self.blosc and _is_chunk_key(key) \
                and any(not path or key.startswith(f"{path}/") for path in self.blosc):
            _check_blosc_frame(key, value)

    async def get(self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None) -> Buffer | None:
        value = await self._store.get(key, prototype, byte_range)
        self._check(key, value, byte_range)
        return value

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        values = await self._store.get_partial_values(prototype, key_ranges)
        for (key, byte_range), value in zip(key_ranges, values, strict=True):
            self._check(key, value, byte_range)
        return values


def checked_array(array: zarr.Array, *, raise_missing: bool) -> zarr.Array:
    """The same array (metadata already read: no request) on its own :class:`CheckingStore`."""
    store_path = array.store_path
    store = CheckingStore(_base_store(store_path.store), raise_missing=raise_missing)
    store.watch(array)
    checked = StorePath(store, store_path.path)
    return zarr.Array(zarr.AsyncArray(array.metadata, checked, array.async_array.config))


def open_store(path: str, storage_options: dict[str, Any] | None = None) -> Store:
    """The read-only store zarr would make for ``path``: fsspec for a URL, else a local directory."""
    if "://" in path:
        return FsspecStore.from_url(path, storage_options=storage_options or None, read_only=True)
    return LocalStore(path, read_only=True)


def _base_store(store: Store) -> Store:
    while isinstance(store, WrapperStore):
        store = store._store
    return store


def cheap_listing(store: Store) -> bool:
    """Whether listing the store's keys is cheap: local directory, zip file, memory."""
    store = _base_store(store)
    if isinstance(store, (LocalStore, MemoryStore, ZipStore)):
        return True
    if isinstance(store, FsspecStore):
        fs = getattr(store.fs, "sync_fs", store.fs)  # fsspec's async wrapper of a sync filesystem
        protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
        return bool({"file", "local", "memory"} & set(protocols))
    return False


def _stored_keys(array: zarr.Array) -> set[str]:
    """Keys under the array's prefix, relative to the array (``c/0/0``, ``0.0``, ...)."""
    store, path = _base_store(array.store_path.store), array.store_path.path
    prefix = f"{path}/" if path else ""
    if isinstance(store, LocalStore):  # os.walk (scandir) beats zarr's rglob + stat per file
        root = os.path.join(str(store.root), path)
        keys: set[str] = set()
        for directory, _dirs, files in os.walk(root):
            rel = os.path.relpath(directory, root).replace(os.sep, "/")
            keys.update(name if rel == "." else f"{rel}/{name}" for name in files)
        return keys
    from zarr.core.sync import sync  # zarr's own bridge from its sync API to the async store

    async def collect() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    return {key[len(prefix):] if key.startswith(prefix) else key for key in sync(collect())}


@dataclass(frozen=True)
class ChunkLayout:
    """Where the stored objects (chunks, or shards of a sharded array) of one Zarr array are.

    ``store`` is the store as the user named it (path or URL), ``array`` the array's path
    inside it; ``shape`` and ``stored`` (chunk or shard shape) give the grid.
    """

    store: str
    array: str
    shape: tuple[int, ...]
    stored: tuple[int, ...]
    sharded: bool
    metadata: Any  # ArrayV2Metadata | ArrayV3Metadata: encodes chunk keys
    fill_value: Any

    @classmethod
    def of(cls, array: zarr.Array, store: str) -> ChunkLayout:
        shards = array.shards
        return cls(store=store, array=array.path, shape=tuple(array.shape),
                   stored=tuple(shards or array.chunks), sharded=shards is not None,
                   metadata=array.metadata, fill_value=array.fill_value)

    @property
    def unit(self) -> str:
        return "shard" if self.sharded else "chunk"

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-n // c) if c else 0 for n, c in zip(self.shape, self.stored, strict=True))

    def key(self, coords: tuple[int, ...]) -> str:
        """The chunk key relative to the array, in the array's own chunk-key encoding."""
        return str(self.metadata.encode_chunk_key(tuple(coords)))

    def file(self, coords: tuple[int, ...]) -> str:
        """The chunk's file (object) name: store path or URL, array path, chunk key."""
        parts = [p.strip("/") for p in (self.array, self.key(coords)) if p.strip("/")]
        return "/".join([self.store.rstrip("/"), *parts])

    def rows(self, coords: tuple[int, ...]) -> tuple[int, int]:
        """First and last row (inclusive) of the chunk."""
        first = coords[0] * self.stored[0]
        return first, min(first + self.stored[0], self.shape[0]) - 1

    def describe(self, coords: tuple[int, ...]) -> str:
        first, last = self.rows(coords)
        return f"{self.unit} {tuple(coords)} (rows {first}-{last}, file {self.file(coords)!r})"

    def coords_in(self, region: Sequence[tuple[int, int]]) -> Iterator[tuple[int, ...]]:
        """Grid coordinates of the stored objects that the ``(start, stop)`` region touches."""
        ranges = [range(a // c, -(-b // c)) for (a, b), c in zip(region, self.stored, strict=True)]
        return itertools.product(*ranges)

    def all_coords(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(g) for g in self.grid))

    def coords_of(self, key: str, region: Sequence[tuple[int, int]] | None = None) -> tuple[int, ...] | None:
        """The coordinates of a (store-relative) chunk key, searched within ``region``."""
        prefix = f"{self.array}/" if self.array else ""
        key = key[len(prefix):] if key.startswith(prefix) else key
        candidates = self.coords_in(region) if region is not None else self.all_coords()
        return next((c for c in candidates if self.key(c) == key), None)


def _allow_hint(unit: str) -> str:
    return (
        f"if these {unit}s were never written on purpose (zarr and anndata skip {unit}s that equal the "
        f"fill value, write_empty_chunks=False), pass allow_missing_chunks=True to read them as the fill value"
    )


def check_chunks(array: zarr.Array, store: str, what: str) -> None:
    """Raise :class:`MissingChunkError` unless every chunk (or shard) file of ``array`` exists.

    Lists the store's keys under the array's prefix once; call it where listing is cheap
    (:func:`cheap_listing`).
    """
    layout = ChunkLayout.of(array, store)
    present = _stored_keys(array)
    missing = [c for c in layout.all_coords() if layout.key(c) not in present]
    if not missing:
        return
    total = int(np.prod(layout.grid))
    shown = "; ".join(layout.describe(c) for c in missing[:3])
    more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
    raise MissingChunkError(
        f"{what} in {store!r} is missing {len(missing)} of its {total} {layout.unit} files: {shown}{more}. "
        f"Zarr would silently read them as the fill value {_plain(layout.fill_value)!r}. The store is "
        f"incomplete: {_RESTORE_CHUNK}; {_allow_hint(layout.unit)}"
    )


def missing_key_error(layout: ChunkLayout | None, key: str, what: str, store: str,
                      region: Sequence[tuple[int, int]] | None = None) -> MissingChunkError:
    """The error for a chunk found missing while reading (see :class:`CheckingStore`)."""
    coords = layout.coords_of(key, region) if layout is not None else None
    if layout is not None and coords is not None:
        where = layout.describe(coords)
    else:
        where = f"chunk file {store.rstrip('/') + '/' + key!r}"
    unit = layout.unit if layout is not None else "chunk"
    return MissingChunkError(
        f"{what} in {store!r}: {where} is missing from the store (deleted after opening, or never "
        f"written); zarr would silently read it as the fill value. {_RESTORE_CHUNK}; {_allow_hint(unit)}"
    )


def first_failing_rows(read: Any, start: int, stop: int, step: int) -> tuple[int, int, BaseException] | None:
    """Read rows ``start:stop`` again ``step`` rows at a time (one stored chunk each);
    return the first ``(first row, last row, error)`` that fails with damage, if any."""
    for a in range(start - start % step if step else start, stop, max(1, step)):
        lo, hi = max(a, start), min(a + step, stop)
        try:
            read(lo, hi)
        except Exception as err:
            if isinstance(err, MissingKey) or is_damage(err):
                return lo, hi - 1, err
            raise
    return None


# ------------------------------------------------------------------ Zarr: block reads


def _region(key: Any, shape: Sequence[int]) -> list[tuple[int, int]] | None:
    """``(start, stop)`` per axis of a basic-slice key, or ``None`` for anything else."""
    if not isinstance(key, tuple):
        key = (key,)
    if len(key) > len(shape) or any(not isinstance(k, slice) for k in key):
        return None
    region = []
    for k, n in zip(key + (slice(None),) * (len(shape) - len(key)), shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            return None
        region.append((start, max(start, stop)))
    return region


class ZarrBlocks:
    """A Zarr array as :func:`dask.array.from_array` reads it, one block per task.

    ``block[key]`` reads like ``array[key]``; when zarr fails it raises
    :class:`MissingChunkError` (a chunk the :class:`CheckingStore` found absent) or
    :class:`DamagedInputError` (a codec or decoding error), naming the chunk file, its
    index and rows. To name the chunk of a decoding error, the stored objects of the
    failing block are read again one by one (on the error path only).
    """

    def __init__(self, array: Any, layout: ChunkLayout, what: str, *, strict: bool) -> None:
        self.array = array
        self.layout = layout
        self.what = what
        self.strict = strict  # whether missing chunks raise (part of the Dask name)
        self.shape = tuple(int(s) for s in array.shape)
        self.ndim = len(self.shape)
        self.dtype = array.dtype

    def __dask_tokenize__(self) -> object:
        return (type(self).__name__, self.layout.store, self.layout.array, self.what, self.shape,
                self.layout.stored, str(self.dtype), self.strict, self.layout.metadata.to_dict())

    def _read(self, key: Any) -> Any:
        return self.array[key]

    def __getitem__(self, key: Any) -> Any:
        try:
            return self._read(key)
        except MissingKey as err:
            raise missing_key_error(self.layout, err.key, self.what, self.layout.store,
                                    _region(key, self.shape)) from None
        except Exception as err:
            if not is_damage(err):
                raise
            raise self._damaged(key, err) from err

    def _damaged(self, key: Any, err: BaseException) -> DamagedInputError:
        region = _region(key, self.shape)
        where: str
        if region is None:
            where = f"the selection {key!r}"
        else:
            where = f"rows {region[0][0]}-{region[0][1] - 1}"
            for coords in self.layout.coords_in(region):
                part = tuple(slice(max(a, c * s), min(b, (c + 1) * s))
                             for (a, b), c, s in zip(region, coords, self.layout.stored, strict=True))
                try:
                    self._read(part)
                except MissingKey as gone:  # deleted meanwhile
                    return missing_key_error(self.layout, gone.key, self.what, self.layout.store, region)
                except Exception as again:  # the first stored object that fails is the damaged one
                    if not is_damage(again):
                        raise
                    where, err = self.layout.describe(coords), again
                    break
        return DamagedInputError(
            f"{self.what} in {self.layout.store!r}: {where} cannot be decoded ({describe_error(err)}); "
            f"the {self.layout.unit} file is damaged or truncated: {_RESTORE_CHUNK}"
        )


class XarrayBlocks(ZarrBlocks):
    """A variable of an xarray dataset in Zarr, read through xarray (so its CF decoding
    applies) block by block, with the error handling of :class:`ZarrBlocks`."""

    def _read(self, key: Any) -> Any:
        return np.asarray(self.array[key].values)


def lazy_blocks(blocks: ZarrBlocks, chunks: tuple[tuple[int, ...], ...] | tuple[int, ...]) -> da.Array:
    """A Dask array over ``blocks`` with exactly ``chunks`` (as :func:`dask.array.from_zarr` builds it)."""
    name = "zarr-" + tokenize(blocks, chunks)
    meta = np.empty((0,) * blocks.ndim, dtype=blocks.dtype)
    return da.from_array(blocks, chunks=chunks, name=name, fancy=False, meta=meta)
