"""How trials get the prepared data cache: a path every worker sees, or Ray's object store.

``cache_via`` (:data:`CacheVia`):

- ``path``: trials read ``SWEEP_DIR/cache`` where it is (local disk, or an NFS/EFS path every node
  mounts);
- ``object_store``: the driver packs the cache into one tar (:func:`pack_cache`) that Ray's object
  store delivers to each trial (``tune.with_parameters``); it is unpacked once per node
  (:func:`unpack_cache`) by :func:`train_fold_from_object_store`. For an object-store ``--storage``
  (``s3://...``), where no path is shared by every worker;
- ``auto``: ``object_store`` exactly when Tune's storage is an object-store URI (:func:`resolve_cache_via`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sweeper.paths import SweepPaths

CacheVia = Literal["auto", "path", "object_store"]
#: above this, the object-store route for the cache gets a warning (README: storage choices)
OBJECT_STORE_CACHE_WARN_BYTES = 2 * 1024**3
#: the folder under a node's temp folder where object-store caches are unpacked, one per cache key
NODE_CACHE_DIR = "sweeper-cache"
logger = logging.getLogger(__name__)


def resolve_cache_via(cache_via: CacheVia, paths: SweepPaths) -> str:
    """Returns ``path`` or ``object_store``: ``auto`` picks the object store exactly when Tune's storage is one."""
    if cache_via == "auto":
        return "object_store" if paths.storage_uri else "path"
    if cache_via not in ("path", "object_store"):
        raise ValueError(f"cache_via must be auto, path or object_store, not {cache_via!r}")
    return cache_via


def pack_cache(cache_dir: Path) -> tuple[str, bytes]:
    """Returns (key, tar bytes) of a prepared cache; the key changes when the cache does."""
    cache_dir = Path(cache_dir)
    key = hashlib.sha1((cache_dir / "cache.json").read_bytes()).hexdigest()[:16]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(cache_dir, arcname=".")
    return key, buffer.getvalue()


def unpack_cache(key: str, blob: bytes, root: str | Path | None = None) -> Path:
    """Unpacks a :func:`pack_cache` blob once per node (``<tmp>/sweeper-cache/<key>``); returns the folder.

    Concurrent trials on one node race safely: each unpacks to its own folder and renames it into
    place; the loser discards its copy.
    """
    root = Path(root or tempfile.gettempdir()) / NODE_CACHE_DIR
    target = root / key
    if (target / "cache.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(staging, filter="data")
    try:
        os.rename(staging, target)
    except OSError:  # another trial on this node got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def train_fold_from_object_store(config: dict[str, Any], cache: tuple[str, bytes] | None = None) -> None:
    """Tune trainable for storage without a shared path: unpacks the cache Ray's object store
    delivered (``tune.with_parameters``) on this node, then runs :func:`trainables.train.train_fold`."""
    from trainables.train import train_fold

    key, blob = cache
    train_fold({**config, "cache_dir": str(unpack_cache(key, blob))})


def fold_trainable(cache_dir: Path, cache_via: str):
    """Returns the fold trainable for a resolved ``cache_via``: :func:`trainables.train.train_fold` reading
    ``cache_dir`` (``path``), or :func:`train_fold_from_object_store` with the packed cache attached
    (``object_store``; warns above :data:`OBJECT_STORE_CACHE_WARN_BYTES`)."""
    from trainables.train import train_fold

    if cache_via != "object_store":
        return train_fold
    from ray import tune

    packed = pack_cache(cache_dir)
    if len(packed[1]) > OBJECT_STORE_CACHE_WARN_BYTES:
        logger.warning(
            "the data cache is %.1f GB; through Ray's object store it is held in the driver's memory "
            "and copied to every node: a path every node mounts (NFS/EFS, --storage /mnt/...) "
            "serves a cache this size better",
            len(packed[1]) / 1e9,
        )
    return tune.with_parameters(train_fold_from_object_store, cache=packed)
