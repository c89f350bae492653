"""Model backends, registered by name. SDK-backed backends import their SDK lazily."""

from __future__ import annotations

from collections.abc import Callable

from dramaturg._model import Backend
from dramaturg.backends._anthropic import AnthropicBackend
from dramaturg.backends._function import FunctionBackend
from dramaturg.backends._openai import OpenAIBackend
from dramaturg.backends._sim import SimBackend, SimOptions, respond_text

__all__ = [
    "BACKEND_FACTORIES",
    "AnthropicBackend",
    "FunctionBackend",
    "OpenAIBackend",
    "SimBackend",
    "SimOptions",
    "close_backends",
    "respond_text",
]


# name -> a factory taking the run's backend settings as keywords (sim_options, base_url,
# timeout_s) and ignoring the ones it has no use for. Adding a backend is one entry here.
async def close_backends(backends: dict[str, Backend]) -> None:
    """Close the SDK backends' connection pools, so no socket outlives the event loop.

    The Backend protocol leaves ``aclose`` optional.
    """
    for backend in backends.values():
        aclose = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()


BACKEND_FACTORIES: dict[str, Callable[..., Backend]] = {
    "sim": lambda sim_options=None, **_: SimBackend(sim_options),
    "anthropic": lambda timeout_s=None, **_: AnthropicBackend(timeout_s=timeout_s),
    "openai": lambda base_url=None, timeout_s=None, **_: OpenAIBackend(
        base_url=base_url, timeout_s=timeout_s
    ),
}
