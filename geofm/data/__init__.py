"""Datasets: TAG / KG loaders, a name registry, download-and-cache, processed cache.

    from geofm.data import load_dataset
    cora = load_dataset("cora")        # TAGDataset, found under $GEOFM_DATA or ../shared/data
    wn = load_dataset("wn18rr")        # KGDataset (names are case-insensitive)
    mine = load_dataset("/path/to/folder")   # any folder in the documented formats
"""

from geofm.data._io import DataFormatError, DataWarning
from geofm.data.cache import cache_root, cached_load, source_checksums
from geofm.data.download import SOURCES, ChecksumError, DatasetSource, RemoteFile, download_file, fetch_dataset
from geofm.data.kg import load_kg
from geofm.data.registry import (
    FORMATS,
    DataFormat,
    detect_format,
    find_dataset,
    known_datasets,
    load_dataset,
    register_format,
    resolve_data_dir,
)
from geofm.data.tag import load_tag
from geofm.data.types import KGDataset, TAGDataset

__all__ = [
    "FORMATS",
    "SOURCES",
    "ChecksumError",
    "DataFormat",
    "DataFormatError",
    "DataWarning",
    "DatasetSource",
    "KGDataset",
    "RemoteFile",
    "TAGDataset",
    "cache_root",
    "cached_load",
    "detect_format",
    "download_file",
    "fetch_dataset",
    "find_dataset",
    "known_datasets",
    "load_dataset",
    "load_kg",
    "load_tag",
    "register_format",
    "resolve_data_dir",
    "source_checksums",
]
