"""Download-and-cache against a loopback HTTP server: resume, truncation, checksums, archives, mirrors."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from geofm.data import ChecksumError, DatasetSource, KGDataset, RemoteFile, download_file, fetch_dataset, load_dataset
from geofm.data.download import SOURCES

FILES = {
    "train.txt": "".join(f"e{i % 50}\tr{i % 3}\te{(i * 7 + 1) % 50}\n" for i in range(150)).encode(),
    "valid.txt": b"e1\tr0\te2\ne3\tr1\tnew\n",
    "test.txt": b"e4\tr2\te5\n",
    "entity2text.txt": "".join(f"e{i}\tentity number {i} \u00e9\n" for i in range(50)).encode() + b"new\tbrand new\n",
}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; honours Range when `server.ranges`; cuts bodies listed in `server.truncate`."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv = self.server
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        srv.log.append((name, rng))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and srv.ranges else 0
        if start >= len(data) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.truncate.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files, srv.log, srv.truncate, srv.ranges = dict(FILES), [], {}, True
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def tiny_source(base: str, files: dict[str, bytes] = FILES, name: str = "Tiny") -> DatasetSource:
    return DatasetSource(name, "kg", tuple(RemoteFile(n, f"{base}/{n}", md5(d)) for n, d in files.items()))


def test_fetch_dataset_then_load(server, tmp_path: Path) -> None:
    folder = fetch_dataset(tiny_source(server.url), cache_dir=tmp_path, timeout=5)
    assert folder == tmp_path / "datasets" / "kg" / "Tiny"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    ds = load_dataset(folder, cache_dir=tmp_path)
    assert isinstance(ds, KGDataset) and len(ds.train) == 150 and ds.entities[-1] == "new"
    n_requests = len(server.log)
    assert fetch_dataset(tiny_source(server.url), cache_dir=tmp_path) == folder
    assert len(server.log) == n_requests  # complete and verified: nothing fetched again
    # downloaded datasets are found by name through the registry
    (tmp_path / "nowhere-else").mkdir()
    assert load_dataset("tiny", data_dir=tmp_path / "nowhere-else", cache_dir=tmp_path).num_entities == ds.num_entities


def test_resume_partial_file_with_range(server, tmp_path: Path) -> None:
    dest = tmp_path / "train.txt"
    data = FILES["train.txt"]
    (tmp_path / "train.txt.part").write_bytes(data[:1000])
    download_file(f"{server.url}/train.txt", dest, md5=md5(data), timeout=5)
    assert dest.read_bytes() == data and not (tmp_path / "train.txt.part").exists()
    assert server.log == [("train.txt", "bytes=1000-")]


def test_part_already_complete_gets_416_and_verifies(server, tmp_path: Path) -> None:
    data = FILES["test.txt"]
    (tmp_path / "test.txt.part").write_bytes(data)
    download_file(f"{server.url}/test.txt", tmp_path / "test.txt", md5=md5(data), timeout=5)
    assert (tmp_path / "test.txt").read_bytes() == data


def test_server_without_range_restarts_from_scratch(server, tmp_path: Path) -> None:
    server.ranges = False
    data = FILES["train.txt"]
    (tmp_path / "train.txt.part").write_bytes(b"garbage that must not be kept")
    download_file(f"{server.url}/train.txt", tmp_path / "train.txt", md5=md5(data), timeout=5)
    assert (tmp_path / "train.txt").read_bytes() == data


def test_truncated_download_leaves_nothing_loadable_then_resumes(server, tmp_path: Path) -> None:
    source = tiny_source(server.url)
    server.truncate["train.txt"] = 700
    with pytest.raises(OSError, match=r"train.txt.*partial data \(700 bytes\) kept in"):
        fetch_dataset(source, cache_dir=tmp_path, retries=0, timeout=5)
    final = tmp_path / "datasets" / "kg" / "Tiny"
    assert not final.exists()
    part = tmp_path / "downloads"
    parts = list(part.glob("*train.txt.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == 700
    with pytest.raises(ValueError, match="unknown dataset 'tiny'"):
        load_dataset("tiny", data_dir=tmp_path / "downloads", cache_dir=tmp_path)
    # a second call resumes at byte 700 and completes
    assert fetch_dataset(source, cache_dir=tmp_path, timeout=5) == final
    assert ("train.txt", "bytes=700-") in server.log
    assert (final / "train.txt").read_bytes() == FILES["train.txt"]


def test_truncation_is_retried_within_one_call(server, tmp_path: Path) -> None:
    server.truncate["train.txt"] = 300
    download_file(f"{server.url}/train.txt", tmp_path / "t.txt", md5=md5(FILES["train.txt"]), timeout=5, retries=2)
    assert server.log == [("train.txt", None), ("train.txt", "bytes=300-")]
    assert (tmp_path / "t.txt").read_bytes() == FILES["train.txt"]


def test_checksum_mismatch(server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="does not match"):
        download_file(f"{server.url}/valid.txt", tmp_path / "v.txt", md5="0" * 32, timeout=5)
    assert list(tmp_path.iterdir()) == []
    bad = DatasetSource("Bad", "kg", (*tiny_source(server.url).files[:2], RemoteFile("test.txt", f"{server.url}/test.txt", "f" * 32)))
    with pytest.raises(ChecksumError):
        fetch_dataset(bad, cache_dir=tmp_path, timeout=5)
    assert not (tmp_path / "datasets" / "kg" / "Bad").exists()


def test_http_404_is_not_retried(server, tmp_path: Path) -> None:
    with pytest.raises(OSError, match="HTTP 404"):
        download_file(f"{server.url}/missing.txt", tmp_path / "m.txt", retries=3, timeout=5)
    assert len(server.log) == 1


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_archive_member_with_transform(server, tmp_path: Path) -> None:
    crlf = {k: v.replace(b"\n", b"\r\n") for k, v in FILES.items() if k != "entity2text.txt"}
    server.files["Tiny.tar.gz"] = _tar_gz({f"Tiny/{k}": v for k, v in crlf.items()})
    no_newline = FILES["entity2text.txt"][:-1]
    server.files["e2t.txt"] = no_newline
    files = tuple(
        RemoteFile(k, f"{server.url}/Tiny.tar.gz", md5(FILES[k]), member=k, transform="crlf_to_lf") for k in crlf
    ) + (RemoteFile("entity2text.txt", f"{server.url}/e2t.txt", md5(FILES["entity2text.txt"]), transform="final_newline"),)
    folder = fetch_dataset(DatasetSource("Arch", "kg", files), cache_dir=tmp_path, timeout=5)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    assert sum(1 for name, _ in server.log if name == "Tiny.tar.gz") == 1  # archive fetched once


def test_corrupt_archive_is_discarded(server, tmp_path: Path) -> None:
    server.files["Tiny.tar.gz"] = _tar_gz({"train.txt": FILES["train.txt"]})[:-40]
    source = DatasetSource("Arch", "kg", (RemoteFile("train.txt", f"{server.url}/Tiny.tar.gz", md5(FILES["train.txt"]), member="train.txt"),))
    with pytest.raises(ValueError):
        fetch_dataset(source, cache_dir=tmp_path, timeout=5)
    assert list((tmp_path / "downloads").iterdir()) == []  # the bad archive is not reused
    assert not (tmp_path / "datasets" / "kg" / "Arch").exists()


def test_offline_mirror_folder_with_gz(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in FILES.items():
        if name == "train.txt":
            (mirror / "train.txt.gz").write_bytes(gzip.compress(data))
        else:
            (mirror / name).write_bytes(data)
    source = tiny_source("https://unreachable.invalid")
    folder = fetch_dataset(source, cache_dir=tmp_path / "c", mirror=mirror)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES


def test_offline_mirror_missing_file(tmp_path: Path) -> None:
    (tmp_path / "mirror").mkdir()
    with pytest.raises(OSError, match="neither train.txt nor train.txt.gz"):
        fetch_dataset(tiny_source("https://unreachable.invalid"), cache_dir=tmp_path / "c", mirror=tmp_path / "mirror")


@pytest.mark.parametrize("name", ["WN18RR", "FB15k-237"])
def test_registry_md5s_match_shared_data(data_dir: Path, tmp_path: Path, name: str) -> None:
    """The download registry's md5s verify against the shipped copies (used here as an offline mirror)."""
    folder = fetch_dataset(name, cache_dir=tmp_path, mirror=data_dir / "kg" / name)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in SOURCES[name.lower()].files)
    ds = load_dataset(name.lower(), data_dir=tmp_path, cache_dir=tmp_path)
    assert ds.num_entities == {"WN18RR": 40943, "FB15k-237": 14541}[name]


def test_load_dataset_download_flag(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(SOURCES, "tiny", tiny_source(server.url))
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="geofm data download Tiny"):
        load_dataset("TINY", data_dir=tmp_path / "data", cache_dir=tmp_path)
    ds = load_dataset("TINY", data_dir=tmp_path / "data", cache_dir=tmp_path, download=True)
    assert ds.name == "Tiny" and len(ds.test) == 1


def test_unknown_source_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="known: WN18RR, FB15k-237"):
        fetch_dataset("nope", cache_dir=tmp_path)
