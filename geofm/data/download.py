"""Download-and-cache of standard public datasets, with resume and md5 verification.

Every file of a `DatasetSource` is fetched (HTTP(S), `file://` or a local path,
all through urllib), optionally extracted from an archive and normalised
(`transform`), then checked against the md5 of the *final* file before it is
renamed into place. Downloads go to `<name>.part` and resume with an HTTP
Range request; a dataset is assembled in a hidden staging folder and renamed
to `<cache>/datasets/<kind>/<name>` only when every file verified, so a
truncated or corrupt download never leaves a folder that loads as valid.
Offline, `mirror=` points the same code path at a local folder (or another
base URL) holding the final files, e.g. ../shared/data/kg/WN18RR.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import shutil
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from geofm.data.cache import atomic_write_bytes, cache_root, md5_file

log = logging.getLogger("geofm.data")

TRANSFORMS = ("crlf_to_lf", "final_newline")


class ChecksumError(ValueError):
    """A downloaded file's md5 differs from the registry's."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset folder.

    name: file name inside the dataset folder. url: where to get it (http(s)://,
    file:// or a local path). md5: hex md5 of the final file. member: archive
    member (matched by base name) when `url` is a .tar/.tar.gz. transform:
    "crlf_to_lf" or "final_newline", applied after extraction, before the md5 check.
    """

    name: str
    url: str
    md5: str
    member: str | None = None
    transform: str | None = None

    def __post_init__(self) -> None:
        if self.transform is not None and self.transform not in TRANSFORMS:
            raise ValueError(f"RemoteFile {self.name}: transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if len(self.md5) != 32:
            raise ValueError(f"RemoteFile {self.name}: md5 must be 32 hex digits")


@dataclass(frozen=True)
class DatasetSource:
    """A downloadable dataset: its files land in `<cache>/datasets/<kind>/<name>/`."""

    name: str
    kind: str
    files: tuple[RemoteFile, ...]
    license: str = ""
    homepage: str = ""


_CONVE = "https://raw.githubusercontent.com/TimDettmers/ConvE/f3c0eb286025410fa5b4c04696c918264163d0ca"
_KGBERT = "https://raw.githubusercontent.com/yao8839836/kg-bert/0b8f625108efcb9b43603b6840f2548ff3d3c973/data"
_STAR = "https://raw.githubusercontent.com/wangbo9719/StAR_KGC/a42a82c4a3510110e434611191b922ee0613495f/StAR/data"

# md5s are those of ../shared/data/kg (its README documents the provenance and the
# two normalisations applied here: CRLF -> LF for FB15k-237 triples, a final newline
# for the kg-bert text files).
SOURCES: dict[str, DatasetSource] = {}


def register_source(source: DatasetSource) -> None:
    """Add a downloadable dataset under its lower-cased name."""
    SOURCES[source.name.lower()] = source


register_source(
    DatasetSource(
        name="WN18RR",
        kind="kg",
        license="triples: MIT (ConvE); WordNet 3.0 license; texts: Apache-2.0 (kg-bert)",
        homepage="https://github.com/TimDettmers/ConvE",
        files=(
            RemoteFile("train.txt", f"{_CONVE}/WN18RR.tar.gz", "35e81af3ae233327c52a87f23b30ad3c", member="train.txt"),
            RemoteFile("valid.txt", f"{_CONVE}/WN18RR.tar.gz", "74a2ee9eca9a8d31f1a7d4d95b5e0887", member="valid.txt"),
            RemoteFile("test.txt", f"{_CONVE}/WN18RR.tar.gz", "2b45ba1ba436b9d4ff27f1d3511224c9", member="test.txt"),
            RemoteFile("entity2text.txt", f"{_KGBERT}/WN18RR/entity2text.txt", "3644082ee9117e65bef4c00f39401ab9", transform="final_newline"),
            RemoteFile("relation2text.txt", f"{_KGBERT}/WN18RR/relation2text.txt", "9df0b58399d4c6b36980bea0312e9355", transform="final_newline"),
        ),
    )
)
register_source(
    DatasetSource(
        name="FB15k-237",
        kind="kg",
        license="Microsoft Research Data License Agreement (check before redistributing); texts: kg-bert Apache-2.0, StAR_KGC unstated",
        homepage="https://www.microsoft.com/en-us/download/details.aspx?id=52312",
        files=(
            RemoteFile("train.txt", f"{_CONVE}/FB15k-237.tar.gz", "eee9ad2aa047afd9ab3ce1dd99b2228a", member="train.txt", transform="crlf_to_lf"),
            RemoteFile("valid.txt", f"{_CONVE}/FB15k-237.tar.gz", "a86f7f17b3a54f01e243536951288a7b", member="valid.txt", transform="crlf_to_lf"),
            RemoteFile("test.txt", f"{_CONVE}/FB15k-237.tar.gz", "63b97dd5a08fff19fdf17f6ad37fecb2", member="test.txt", transform="crlf_to_lf"),
            RemoteFile("entity2text.txt", f"{_KGBERT}/FB15k-237/entity2text.txt", "3e4b31f9a91849c1e04aec95b3cd92a8", transform="final_newline"),
            RemoteFile("entity2text_firstsentence.txt", f"{_STAR}/FB15k-237/fb-entity2text-new.txt", "88e4a61991c680f18eab28d4aa01d76d"),
            RemoteFile("relation2text.txt", f"{_KGBERT}/FB15k-237/relation2text.txt", "a42bdf4de366230c6b781e7a8cfc36d5", transform="final_newline"),
        ),
    )
)


def _as_url(url_or_path: str) -> str:
    """A URL for urllib: http(s):// and file:// unchanged, a local path as file://."""
    if "://" in url_or_path:
        return url_or_path
    return Path(url_or_path).expanduser().resolve().as_uri()


def _fetch_into(url: str, part: Path, timeout: float, chunk_size: int) -> None:
    """Append the rest of `url` to `part` (Range resume when it has bytes, else from scratch).

    Raises OSError when the connection ends before the announced Content-Length.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "geofm-data"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the md5 check decides
            return
        raise
    with resp:
        status = getattr(resp, "status", None)
        resumed = bool(have) and status == 206
        if resumed:
            start = (resp.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start != str(have):
                raise OSError(f"{url}: server resumed at {start!r}, expected byte {have}")
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        written = 0
        bar = _progress(expected, part.name, initial=have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as f:
            try:
                while block := resp.read(chunk_size):
                    f.write(block)
                    written += len(block)
                    bar.update(len(block))
            finally:
                bar.close()
        if expected is not None and written < expected:
            raise OSError(f"{url}: connection closed after {written} of {expected} bytes")


def _progress(total: int | None, desc: str, initial: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, disable=not sys.stderr.isatty(), leave=False)


def download_file(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    chunk_size: int = 1 << 16,
) -> Path:
    """Download `url` to `dest` via `dest.part`, resuming a partial file, then rename atomically.

    Transient failures (connection errors, truncated bodies, 5xx) are retried up
    to `retries` times, each resuming where the last stopped; after that an
    OSError is raised and the `.part` file is kept for a later resume. With
    `md5`, a mismatch deletes the `.part` file and raises ChecksumError; `dest`
    only ever appears complete and verified.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = _as_url(url)
    if url.startswith("file:"):
        retries = 0  # a local file that cannot be read will not appear by retrying
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout, chunk_size)
            break
        except urllib.error.HTTPError as err:
            if err.code < 500:
                raise OSError(f"{url}: HTTP {err.code} {err.reason}") from err
            last = err
        except (OSError, http.client.HTTPException) as err:
            last = err
        log.warning("download %s failed (attempt %d/%d): %s", url, attempt + 1, retries + 1, last)
        if attempt < retries:
            time.sleep(min(0.1 * 2**attempt, 2.0))
    else:
        kept = (f"; partial data ({part.stat().st_size} bytes) kept in {part} for a resume"
                if part.is_file() and part.stat().st_size else "")
        raise OSError(f"download of {url} failed after {retries + 1} attempt(s): {last}{kept}")
    if not part.exists():
        raise OSError(f"download of {url} produced no data")
    if md5 is not None:
        got = md5_file(part)
        if got != md5:
            part.unlink()
            raise ChecksumError(f"{url}: md5 {got} does not match the expected {md5}; the download was deleted")
    os.replace(part, dest)
    return dest


def _apply(data: bytes, transform: str | None) -> bytes:
    if transform == "crlf_to_lf":
        return data.replace(b"\r\n", b"\n")
    if transform == "final_newline" and data and not data.endswith(b"\n"):
        return data + b"\n"
    return data


def _extract_member(archive: Path, member: str) -> bytes:
    """Bytes of the archive member whose base name is `member`; ValueError when absent/corrupt."""
    try:
        with tarfile.open(archive) as tar:
            for info in tar.getmembers():
                if info.isfile() and Path(info.name).name == member:
                    f = tar.extractfile(info)
                    assert f is not None
                    return f.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{archive}: corrupt or truncated archive ({err})") from err
    raise ValueError(f"{archive}: no member named {member!r}")


def _write_verified(data: bytes, target: Path, md5: str, origin: str) -> None:
    """Write `data` to `target` atomically iff its md5 matches; else ChecksumError."""
    got = hashlib.md5(data).hexdigest()
    if got != md5:
        raise ChecksumError(f"{target.name} from {origin}: md5 {got} does not match the expected {md5}")
    atomic_write_bytes(target, lambda f: f.write(data))


def _materialize(rf: RemoteFile, target: Path, downloads: Path, *, timeout: float, retries: int) -> None:
    """Fetch one RemoteFile from its source URL into `target` (verified)."""
    raw_name = hashlib.sha1(rf.url.encode()).hexdigest()[:12] + "-" + rf.url.rstrip("/").rsplit("/", 1)[-1]
    raw = downloads / raw_name
    direct = rf.member is None and rf.transform is None
    if not raw.exists():
        download_file(rf.url, raw, md5=rf.md5 if direct else None, timeout=timeout, retries=retries)
    try:
        data = raw.read_bytes() if rf.member is None else _extract_member(raw, rf.member)
        _write_verified(_apply(data, rf.transform), target, rf.md5, rf.url)
    except ValueError:
        raw.unlink(missing_ok=True)  # never reuse a download that produced a bad file
        raise


def _materialize_from_mirror(rf: RemoteFile, target: Path, mirror: str, *, timeout: float, retries: int) -> None:
    """Fetch one file from a mirror holding the final files (`name`, or `name.gz` to gunzip)."""
    base = _as_url(mirror).rstrip("/")
    errors = []
    for candidate in (rf.name, rf.name + ".gz"):
        tmp = target.with_name(f".{candidate}.mirror")
        try:
            download_file(f"{base}/{candidate}", tmp, timeout=timeout, retries=retries)
        except OSError as err:
            errors.append(str(err))
            continue
        try:
            data = tmp.read_bytes()
            if candidate.endswith(".gz"):
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError) as err:
                    raise ValueError(f"{base}/{candidate}: corrupt gzip ({err})") from err
            _write_verified(data, target, rf.md5, f"{base}/{candidate}")
        finally:
            tmp.unlink(missing_ok=True)
        return
    raise OSError(f"mirror {mirror} has neither {rf.name} nor {rf.name}.gz: {'; '.join(errors)}")


def _complete(folder: Path, source: DatasetSource) -> bool:
    return folder.is_dir() and all((folder / f.name).is_file() and md5_file(folder / f.name) == f.md5 for f in source.files)


def dataset_cache_dir(source: DatasetSource, cache_dir: str | Path | None = None) -> Path:
    """Where `fetch_dataset` puts `source`: `<cache>/datasets/<kind>/<name>`."""
    return cache_root(cache_dir) / "datasets" / source.kind / source.name


def fetch_dataset(
    name_or_source: str | DatasetSource,
    *,
    cache_dir: str | Path | None = None,
    mirror: str | Path | None = None,
    force: bool = False,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Make `<cache>/datasets/<kind>/<name>` hold every file of the source, verified; return it.

    Already-complete folders are returned as they are (unless `force`). Files
    verified by an earlier interrupted call are kept in the staging folder and
    not fetched again. `mirror`: a local folder or base URL with the final files.
    """
    if isinstance(name_or_source, DatasetSource):
        source = name_or_source
    else:
        source = SOURCES.get(str(name_or_source).lower())
        if source is None:
            raise ValueError(f"no download source for {name_or_source!r}; known: {', '.join(s.name for s in SOURCES.values())}")
    final = dataset_cache_dir(source, cache_dir)
    if not force and _complete(final, source):
        return final
    staging = final.with_name(f".{source.name}.staging")
    staging.mkdir(parents=True, exist_ok=True)
    downloads = cache_root(cache_dir) / "downloads"
    for rf in source.files:
        target = staging / rf.name
        if target.is_file() and md5_file(target) == rf.md5:
            continue
        log.info("fetching %s/%s", source.name, rf.name)
        if mirror is not None:
            _materialize_from_mirror(rf, target, str(mirror), timeout=timeout, retries=retries)
        else:
            _materialize(rf, target, downloads, timeout=timeout, retries=retries)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    return final


__all__ = [
    "SOURCES",
    "ChecksumError",
    "DatasetSource",
    "RemoteFile",
    "dataset_cache_dir",
    "download_file",
    "fetch_dataset",
    "register_source",
]
