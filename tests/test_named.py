"""Named corpora fetched from a local HTTP server on 127.0.0.1 (no internet in tests)."""

import dataclasses
import hashlib
import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from charlm.text import named
from charlm.errors import CorpusError


class _Server:
    """Serves fixtures made by the test; records every request path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _register(monkeypatch, **fields):
    corpus = named.NamedCorpus(name="fixture", description="a test corpus", filename="fixture.txt", **fields)
    monkeypatch.setitem(named.REGISTRY, "fixture", corpus)
    return corpus


def test_download_is_verified_cached_and_never_repeated(server, monkeypatch, tmp_path):
    body = b"To be, or not to be\n" * 50
    server.files["/plain.txt"] = body
    _register(monkeypatch, url=server.url("/plain.txt"), sha256=hashlib.sha256(body).hexdigest(),
              size_bytes=len(body))
    seen = []
    path = named.fetch("fixture", tmp_path, progress=lambda total, name: seen.append(total) or (lambda n: None))
    assert path.read_bytes() == body and seen == [len(body)]
    assert named.fetch("fixture", tmp_path) == path and server.requests == ["/plain.txt"]  # not fetched again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixture.txt"]


def test_a_zip_archive_is_unpacked(server, monkeypatch, tmp_path):
    text = b"anarchism originated as a term of abuse " * 100
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("text8", text)
    server.files["/text8.zip"] = archive.getvalue()
    _register(monkeypatch, url=server.url("/text8.zip"), sha256=hashlib.sha256(archive.getvalue()).hexdigest(),
              member="text8", size_bytes=len(text))
    assert named.fetch("fixture", tmp_path).read_bytes() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fixture.txt"]  # the archive is not kept


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case, words", [
    ("tampered", "does not match its pinned SHA-256"),
    ("truncated", "cut off"),
    ("http error", "HTTP 404"),
    ("no network", "download of fixture failed"),
])
def test_a_failed_download_leaves_nothing_behind(server, monkeypatch, tmp_path, case, words):
    body = b"the published text\n" * 100
    server.files["/c.txt"] = body if case != "tampered" else body.replace(b"text", b"TEXT")
    if case == "truncated":
        server.truncate.add("/c.txt")
    url = {"http error": server.url("/missing.txt"),
           "no network": f"http://127.0.0.1:{_closed_port()}/c.txt"}.get(case, server.url("/c.txt"))
    _register(monkeypatch, url=url, sha256=hashlib.sha256(body).hexdigest(), size_bytes=len(body))
    monkeypatch.setattr(named, "DOWNLOAD_TIMEOUT_S", 5)
    with pytest.raises(CorpusError, match=words) as failure:
        named.fetch("fixture", tmp_path)
    assert "\n" not in str(failure.value) and "charlm corpus get fixture" in str(failure.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_names_and_pins_of_the_real_registry():
    with pytest.raises(CorpusError, match="no corpus named 'nope'"):
        named.fetch("nope")
    for corpus in named.REGISTRY.values():
        if corpus.url:
            assert len(corpus.sha256) == 64 and int(corpus.sha256, 16) >= 0
    assert named.REGISTRY["enwik8"].standard_splits == (90_000_000, 95_000_000)
    assert named.REGISTRY["enwik8"].tokenizer == "bytes" and named.REGISTRY["text8"].tokenizer == "chars"
    assert dataclasses.is_dataclass(named.REGISTRY["python"])
