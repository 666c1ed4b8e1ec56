"""Named corpora: `charlm train NAME`, `charlm corpus list`, `charlm corpus get NAME`.

`python` is built from the running Python's own standard library (no network;
see corpus.py). The others are fetched once from their canonical addresses,
checked against a pinned SHA-256, unpacked if needed and kept under
`corpora/`; a file there under its final name was verified before it was
moved into place, so it is never fetched again. enwik8 and text8 carry their
standard 90M/5M/5M splits so figures compare with published ones; enwik8 is
read as bytes and scored in bits per byte.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from charlm.text.corpus import DEFAULT_CORPUS_NAME, ensure_default_corpus
from charlm.errors import CorpusError

CORPORA_DIR = Path("corpora")
DOWNLOAD_TIMEOUT_S = 60
_BLOCK = 1 << 20


@dataclass(frozen=True)
class NamedCorpus:
    name: str
    description: str
    url: str | None = None  # None: built locally
    sha256: str | None = None  # of what is downloaded (the archive, when there is one)
    download_bytes: int | None = None
    member: str | None = None  # the file to take out of a zip archive
    filename: str = ""  # name under corpora/
    size_bytes: int | None = None  # of the unpacked text
    standard_splits: tuple[int, int] | None = None  # (train_end, val_end) in tokens
    tokenizer: str = "chars"  # the one its published figures use

    @property
    def unit(self) -> str:
        return "byte" if self.tokenizer == "bytes" else "char"


REGISTRY: dict[str, NamedCorpus] = {c.name: c for c in [
    NamedCorpus("python", "the running Python's standard library sources, about 4 MB (built locally)",
                filename=f"{DEFAULT_CORPUS_NAME}.txt"),
    NamedCorpus("tinyshakespeare", "Tiny Shakespeare, 1.1 MB (Karpathy's char-rnn)",
                url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                download_bytes=1_115_394, filename="tinyshakespeare.txt", size_bytes=1_115_394),
    NamedCorpus("enwik8", "first 100 MB of an English Wikipedia XML dump (Hutter Prize); bytes, "
                "splits 90M/5M/5M, scored in bits per byte",
                url="http://mattmahoney.net/dc/enwik8.zip",
                sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
                download_bytes=36_445_475, member="enwik8", filename="enwik8", size_bytes=100_000_000,
                standard_splits=(90_000_000, 95_000_000), tokenizer="bytes"),
    NamedCorpus("text8", "100 MB of cleaned Wikipedia text, 27 characters (a-z and space); "
                "splits 90M/5M/5M",
                url="http://mattmahoney.net/dc/text8.zip",
                sha256="a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
                download_bytes=31_344_016, member="text8", filename="text8", size_bytes=100_000_000,
                standard_splits=(90_000_000, 95_000_000)),
]}


def is_named(argument: str) -> bool:
    return argument in REGISTRY


def local_path(corpus: NamedCorpus, directory: Path = CORPORA_DIR) -> Path:
    return directory / corpus.filename


def is_present(corpus: NamedCorpus, directory: Path = CORPORA_DIR) -> bool:
    path = local_path(corpus, directory)
    if not path.is_file():
        return False
    return corpus.size_bytes is None or path.stat().st_size == corpus.size_bytes


def fetch(name: str, directory: Path = CORPORA_DIR,
          progress: Callable[[int, int | None], Callable[[int], None]] | None = None) -> Path:
    """The named corpus's file under directory, fetched and verified first if it is not there.

    progress(total_bytes, name) returns a callback taking each block's size.
    """
    corpus = REGISTRY.get(name)
    if corpus is None:
        raise CorpusError(f"no corpus named {name!r}; see: charlm corpus list")
    if corpus.url is None:
        return ensure_default_corpus(directory)
    target = local_path(corpus, directory)
    if is_present(corpus, directory):
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CorpusError(f"cannot create {directory}: {exc.strerror}; check the permissions of its parent") from None
    download = directory / f".{corpus.name}.download"
    try:
        _download(corpus, download, progress)
        if corpus.member:
            _unpack(corpus, download, target)
        else:
            os.replace(download, target)
    finally:
        download.unlink(missing_ok=True)
        target.with_name(target.name + ".partial").unlink(missing_ok=True)
    return target


def _download(corpus: NamedCorpus, destination: Path, progress) -> None:
    advice = (f"check the network and run `charlm corpus get {corpus.name}` again, or download {corpus.url} "
              f"yourself and train on the file")
    hasher, received = hashlib.sha256(), 0
    try:
        request = urllib.request.Request(corpus.url, headers={"User-Agent": "charlm"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, destination.open("wb") as out:
            announced = int(response.headers.get("Content-Length") or 0)
            advance = progress(announced or corpus.download_bytes, corpus.name) if progress else (lambda n: None)
            while block := response.read(_BLOCK):
                out.write(block)
                hasher.update(block)
                received += len(block)
                advance(len(block))
        if announced and received < announced:
            raise ConnectionError(f"{received:,} of {announced:,} bytes")
    except ConnectionError as exc:
        raise CorpusError(f"download of {corpus.name} was cut off ({exc}); {advice}") from None
    except urllib.error.HTTPError as exc:
        raise CorpusError(f"download of {corpus.name} failed: HTTP {exc.code} {exc.reason} from {corpus.url}; "
                          f"{advice}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise CorpusError(f"download of {corpus.name} failed: {reason}; {advice}") from None
    except Exception as exc:  # http.client.IncompleteRead and kin: a cut connection
        raise CorpusError(f"download of {corpus.name} was cut off after {received:,} bytes "
                          f"({type(exc).__name__}); {advice}") from None
    if hasher.hexdigest() != corpus.sha256:
        raise CorpusError(f"download of {corpus.name} does not match its pinned SHA-256 ({received:,} bytes, "
                          f"sha256 {hasher.hexdigest()[:16]}..., expected {corpus.sha256[:16]}...): it is "
                          f"damaged or not the published file, so nothing was kept; {advice}")


def _unpack(corpus: NamedCorpus, archive: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    try:
        with zipfile.ZipFile(archive) as bundle, bundle.open(corpus.member) as source, partial.open("wb") as out:
            while block := source.read(_BLOCK):
                out.write(block)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise CorpusError(f"cannot unpack {corpus.member} from the {corpus.name} archive: {exc}; "
                          f"run `charlm corpus get {corpus.name}` again") from None
    os.replace(partial, target)
