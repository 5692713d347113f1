"""Processed-dataset cache: parsed TAG/KG datasets saved as object-free `.npz` files.

A cache entry is keyed by sha256 over (CACHE_FORMAT_VERSION, geofm version,
loader kind, loader options, md5 of every source file in the dataset folder),
so editing a source file, changing an option or upgrading misses the cache.
Files are written to a temporary name and renamed (atomic on POSIX), and read
back with `allow_pickle=False`: strings are stored as one UTF-8 byte buffer
plus int64 offsets.

Hashing large sources on every load would dominate a cache hit, so md5s are
memoised in `<cache>/checksums.json` by (absolute path, size, mtime_ns): a
file whose size and modification time are unchanged is not re-hashed (the
same trade-off `make` and git's index make).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import secrets
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from geofm.data._io import DataWarning, warn
from geofm.data.types import KGDataset, TAGDataset

log = logging.getLogger("geofm.data")

CACHE_FORMAT_VERSION = 2
_CLASSES = {"TAGDataset": TAGDataset, "KGDataset": KGDataset}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache folder: `cache_dir`, else `$GEOFM_CACHE`, else `~/.cache/geofm` (not created here)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GEOFM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geofm"


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file's bytes, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, write: Callable[[Any], None], suffix: str = ".tmp") -> None:
    """Call `write(fileobj)` on a temp file beside `path`, fsync, then rename it over `path`.
    The file gets the permissions a plain `open(path, "w")` would give: created with mode 0666
    under the process umask (not mkstemp's 0600, and without touching the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}{suffix}"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode("utf-8")))


def check_out_folder(path: str | Path) -> None:
    """FileExistsError / NotADirectoryError (as `os.makedirs` would raise them) when `path` or
    one of its parents is an existing file: an --out folder checked before hours of work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(17, "exists and is not a folder", str(path))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(20, "not a folder", str(parent))
            return


def source_checksums(folder: str | Path, cache_dir: str | Path | None = None, *, memo: bool = True) -> dict[str, str]:
    """{file name: md5} for every regular, non-hidden file directly in `folder` (sorted by name).

    With `memo`, md5s are memoised by (path, size, mtime_ns) in
    `<cache>/checksums.json`; without it every file is hashed and the cache
    folder is not touched.
    """
    folder = Path(folder).resolve()
    memo_path = cache_root(cache_dir) / "checksums.json"
    known: dict = {}
    if memo:
        try:
            known = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            known = {}
    out: dict[str, str] = {}
    changed = False
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.name.endswith(".part") or not f.is_file():
            continue
        st = f.stat()
        stamp = [st.st_size, st.st_mtime_ns]
        hit = known.get(str(f))
        if hit and hit[:2] == stamp:
            out[f.name] = hit[2]
            continue
        out[f.name] = md5_file(f)
        known[str(f)] = stamp + [out[f.name]]
        changed = True
    if changed and memo:
        try:
            atomic_write_bytes(memo_path, lambda fo: fo.write(json.dumps(known).encode()))
        except OSError as err:  # a read-only cache only costs speed
            log.debug("could not write checksum memo %s: %s", memo_path, err)
    return out


def cache_key(kind: str, checksums: dict[str, str], options: dict[str, Any]) -> str:
    """sha256 hex over the format version, geofm version, loader kind, options and source checksums."""
    from geofm import __version__

    payload = json.dumps(
        {"version": CACHE_FORMAT_VERSION, "geofm": __version__, "kind": kind, "options": options, "files": checksums},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def encode_strings(items: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """list of str|None -> (uint8 UTF-8 buffer, int64 offsets [n+1], bool present-mask [n])."""
    present = np.fromiter((s is not None for s in items), dtype=bool, count=len(items))
    encoded = [(s or "").encode("utf-8") for s in items]
    offsets = np.zeros(len(items) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    return buf, offsets, present


def decode_strings(buf: np.ndarray, offsets: np.ndarray, present: np.ndarray) -> list[str | None]:
    """Inverse of `encode_strings`."""
    data = buf.tobytes()
    off = offsets.tolist()
    out: list[str | None] = [data[a:b].decode("utf-8") for a, b in zip(off[:-1], off[1:])]
    if not present.all():
        for i in np.flatnonzero(~present).tolist():
            out[i] = None
    return out


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(v is None or isinstance(v, str) for v in value)


def dataset_to_arrays(ds: TAGDataset | KGDataset) -> dict[str, np.ndarray]:
    """Flatten a dataset dataclass into named arrays (no object dtype).

    ndarray fields -> `a/<f>`; string lists -> `s/<f>/{buf,off,mask}`; dicts of
    arrays (splits) -> `d/<f>/<key>`; everything else JSON in `header`.
    """
    arrays: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {"version": CACHE_FORMAT_VERSION, "class": type(ds).__name__, "json": {}, "dicts": []}
    for f in dataclasses.fields(ds):
        value = getattr(ds, f.name)
        if isinstance(value, np.ndarray):
            arrays[f"a/{f.name}"] = value
        elif value is not None and _is_str_list(value) and f.name != "meta":
            buf, off, mask = encode_strings(value)
            arrays[f"s/{f.name}/buf"], arrays[f"s/{f.name}/off"], arrays[f"s/{f.name}/mask"] = buf, off, mask
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()):
            header["dicts"].append(f.name)
            for k, v in value.items():
                arrays[f"d/{f.name}/{k}"] = v
        else:
            header["json"][f.name] = value
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return arrays


def arrays_to_dataset(arrays: dict[str, np.ndarray]) -> TAGDataset | KGDataset:
    """Inverse of `dataset_to_arrays`; raises ValueError on a version or class mismatch."""
    header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    if header.get("version") != CACHE_FORMAT_VERSION or header.get("class") not in _CLASSES:
        raise ValueError(f"processed cache entry has version {header.get('version')} / class {header.get('class')}")
    kwargs: dict[str, Any] = dict(header["json"])
    for name in header["dicts"]:
        kwargs[name] = {}
    for key, value in arrays.items():
        parts = key.split("/")
        if parts[0] == "a":
            kwargs[parts[1]] = value
        elif parts[0] == "d":
            kwargs[parts[1]][parts[2]] = value
        elif parts[0] == "s" and parts[2] == "buf":
            f = parts[1]
            kwargs[f] = decode_strings(value, arrays[f"s/{f}/off"], arrays[f"s/{f}/mask"])
    return _CLASSES[header["class"]](**kwargs)


def save_dataset(ds: TAGDataset | KGDataset, path: str | Path) -> None:
    """Write `ds` to an uncompressed npz at `path` atomically."""
    arrays = dataset_to_arrays(ds)
    atomic_write_bytes(Path(path), lambda f: np.savez(f, **arrays), suffix=".npz.tmp")


def load_dataset_npz(path: str | Path) -> TAGDataset | KGDataset:
    """Read a dataset saved by `save_dataset` (no pickle)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays_to_dataset(arrays)


def cached_load(
    folder: str | Path,
    kind: str,
    loader: Callable[..., TAGDataset | KGDataset],
    options: dict[str, Any],
    *,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
) -> TAGDataset | KGDataset:
    """`loader(folder, **options)` through the processed cache.

    The returned dataset's meta gets `checksums` ({file: md5}, for run records)
    and `cache` = {"hit": bool, "path": str, "seconds": float}. A corrupt or
    unreadable cache entry is treated as a miss and rewritten. With
    `use_cache=False` nothing is read from or written to the cache folder.
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    sums = source_checksums(folder, cache_dir, memo=use_cache)
    key = cache_key(kind, sums, options)
    path = cache_root(cache_dir) / "processed" / f"{kind}-{folder.name}-{key[:20]}.npz"
    ds = None
    hit = False
    if use_cache and path.is_file():
        try:
            ds = load_dataset_npz(path)
            hit = True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("ignoring unreadable processed cache %s: %s", path, err)
    if ds is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            ds = loader(folder, **options)
        notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
        for w in caught:  # hand every warning on to the caller's filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        ds = dataclasses.replace(ds, meta={**ds.meta, "checksums": sums, "warnings": notes})
        if use_cache:
            try:
                save_dataset(ds, path)
            except OSError as err:
                log.warning("could not write processed cache %s: %s", path, err)
    else:
        # A cache hit replays the loader's data warnings (dropped duplicates, missing texts).
        for note in ds.meta.get("warnings", []):
            warn(note)
    info = {"hit": hit, "path": str(path), "seconds": time.perf_counter() - t0}
    return dataclasses.replace(ds, meta={**ds.meta, "cache": info, "source": str(folder.resolve())})
