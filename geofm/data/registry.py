"""Dataset registry: resolve a name or folder, detect its format, load it (through the cache).

Names are matched case-insensitively against dataset folders found under the
data roots, in this order:
  1. `data_dir` (the `--data-dir` flag) when given, else `$GEOFM_DATA` when set,
     else `../shared/data` beside the repository, else `../shared/data` from the CWD;
  2. the download cache (`<cache>/datasets`, filled by `geofm data download`);
  3. the generated datasets (`GENERATED`, e.g. `tiny_kg`), written once under `<cache>/generated`.
Inside a root, datasets are the sub-folders of `tag/`, `kg/` and the root itself
that are in a known format. A path to any folder in a known format also works.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from geofm.data.cache import cache_root, cached_load
from geofm.data.kg import find_split_file, load_kg
from geofm.data.tag import TAG_REQUIRED, load_tag
from geofm.data.types import KGDataset, TAGDataset

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class DataFormat:
    """A folder format: `detect(folder) -> bool` and `load(folder, **opts) -> dataset`."""

    name: str
    detect: Callable[[Path], bool]
    load: Callable[..., TAGDataset | KGDataset]


def _is_tag(folder: Path) -> bool:
    return all((folder / f).is_file() for f in TAG_REQUIRED)


def _is_kg(folder: Path) -> bool:
    return all(find_split_file(folder, s) is not None for s in ("train", "valid", "test"))


FORMATS: dict[str, DataFormat] = {}


def register_format(fmt: DataFormat) -> None:
    """Add a folder format; detection tries formats in registration order."""
    FORMATS[fmt.name] = fmt


register_format(DataFormat("tag", _is_tag, load_tag))
register_format(DataFormat("kg", _is_kg, load_kg))


def detect_format(folder: str | Path) -> str | None:
    """Name of the first registered format whose files `folder` has, else None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for fmt in FORMATS.values():
        if fmt.detect(folder):
            return fmt.name
    return None


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The data root: `data_dir`, else `$GEOFM_DATA`, else the first existing `../shared/data`.

    An explicit `data_dir` or `$GEOFM_DATA` that is not a folder raises
    FileNotFoundError; with neither given, returns None when no default exists.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"data dir {path} does not exist")
        return path
    env = os.environ.get("GEOFM_DATA")
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"$GEOFM_DATA={env} is not a folder")
        return path
    for cand in (REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"):
        if cand.is_dir():
            return cand
    return None


def data_roots(data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for dataset names: the resolved data dir, then the download cache."""
    roots = []
    main = resolve_data_dir(data_dir)
    if main is not None:
        roots.append(main)
    downloads = cache_root(cache_dir) / "datasets"
    if downloads.is_dir():
        roots.append(downloads)
    return roots


def discover(data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> dict[str, Path]:
    """{lower-cased name: folder} of every dataset under the roots (earlier roots win)."""
    found: dict[str, Path] = {}
    for root in data_roots(data_dir, cache_dir):
        for parent in (root / "tag", root / "kg", root):
            if not parent.is_dir():
                continue
            for child in sorted(parent.iterdir()):
                if child.is_dir() and not child.name.startswith(".") and detect_format(child):
                    found.setdefault(child.name.lower(), child)
    return found


def known_datasets(data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> list[str]:
    """Folder names of the datasets found under the roots, sorted case-insensitively."""
    return sorted((p.name for p in discover(data_dir, cache_dir).values()), key=str.lower)


# Datasets generated on first use when no root holds one of that name: name -> "module:writer",
# writer(folder) writing the dataset files into an empty folder.
GENERATED: dict[str, str] = {"tiny_kg": "geofm.kg.synthetic:write_tiny_kg"}


def _generated(key: str, cache_dir: str | Path | None) -> Path:
    """The folder of generated dataset `key`, written (beside it, then renamed) when missing."""
    import importlib
    import shutil
    import tempfile

    folder = cache_root(cache_dir) / "generated" / key
    if folder.is_dir():
        return folder
    module, _, fn = GENERATED[key].partition(":")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}."))
    try:
        getattr(importlib.import_module(module), fn)(tmp)
        tmp.rename(folder)
    except OSError:
        if not folder.is_dir():  # not another process winning the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def find_dataset(name_or_path: str | Path, data_dir: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Folder of a dataset given by name (case-insensitive) or by path.

    Written as a path (a separator in it, absolute, `.` or `..`): that folder. A bare name: the
    data roots first (`data_roots`: --data-dir / $GEOFM_DATA / ../shared/data, then the download
    cache), then the generated datasets, and only then a dataset folder of that name in the
    current directory. Raises ValueError listing the known names (and downloadable ones) when
    nothing matches.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"dataset: expected a name or a folder path, got {type(name_or_path).__name__}")
    path = Path(name_or_path).expanduser()
    as_path = os.sep in str(name_or_path) or path.is_absolute() or str(name_or_path) in (".", "..")
    if as_path and path.is_dir():
        if not detect_format(path):
            no_tag = [f for f in TAG_REQUIRED if not (path / f).is_file()]
            no_kg = [f"{s}.txt" for s in ("train", "valid", "test") if find_split_file(path, s) is None]
            raise ValueError(f"{path}: not a dataset folder: a text-attributed graph needs {', '.join(TAG_REQUIRED)} "
                             f"(missing {', '.join(no_tag)}); a knowledge graph needs train/valid/test.txt "
                             f"(missing {', '.join(no_kg)})")
        return path
    if as_path and not path.exists():
        raise FileNotFoundError(f"dataset folder {path} does not exist")
    found = discover(data_dir, cache_dir)
    key = str(name_or_path).lower()
    if key in found:
        return found[key]
    if key in GENERATED:
        return _generated(key, cache_dir)
    if path.is_dir() and detect_format(path):  # a dataset folder of that name here, no root has one
        return path
    from geofm.data.download import SOURCES

    known = known_datasets(data_dir, cache_dir)
    roots = ", ".join(str(r) for r in data_roots(data_dir, cache_dir)) or "none found (set $GEOFM_DATA or --data-dir)"
    hint = ""
    if key in SOURCES:
        hint = f"; it is downloadable: `geofm data download {SOURCES[key].name}`"
    raise ValueError(
        f"unknown dataset {str(name_or_path)!r}{hint}. Known here: {', '.join(known) or 'none'}; "
        f"downloadable: {', '.join(s.name for s in SOURCES.values())}; searched: {roots}"
    )


def load_dataset(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    *,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    download: bool = False,
    **opts: Any,
) -> TAGDataset | KGDataset:
    """Load a dataset by name or folder; format (TAG or KG) is detected from the files.

    opts go to the format's loader (`load_tag` / `load_kg`: on_duplicate,
    on_self_loop, entity_text, ...). With `cache=True` the parsed dataset is
    kept in `<cache>/processed` keyed by source checksums + options; meta then
    has `checksums` and `cache`. With `download=True` a name missing locally
    but present in `geofm.data.download.SOURCES` is fetched first.
    """
    try:
        folder = find_dataset(name_or_path, data_dir, cache_dir)
    except ValueError:
        from geofm.data.download import SOURCES, fetch_dataset

        if not (download and str(name_or_path).lower() in SOURCES):
            raise
        folder = fetch_dataset(str(name_or_path), cache_dir=cache_dir)
    kind = detect_format(folder)
    assert kind is not None  # find_dataset only returns detected folders
    loader = FORMATS[kind].load
    allowed = {n for n, p in inspect.signature(loader).parameters.items() if p.kind is p.KEYWORD_ONLY}
    unknown = sorted(set(opts) - allowed)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {kind} dataset {folder}; allowed: {sorted(allowed)}")
    return cached_load(folder, kind, loader, opts, cache_dir=cache_dir, use_cache=cache)
