"""Model backends, registered by name. SDK-backed backends import their SDK lazily."""

from __future__ import annotations

from collections.abc import Callable

from dramaturg._model import Backend
from dramaturg.backends._function import FunctionBackend
from dramaturg.backends._sim import SimBackend, SimOptions, respond_text

__all__ = ["BACKEND_FACTORIES", "FunctionBackend", "SimBackend", "SimOptions", "respond_text"]

# name -> a factory taking the run's backend settings. Adding a backend is one entry here.
BACKEND_FACTORIES: dict[str, Callable[..., Backend]] = {
    "sim": lambda sim_options=None, **_: SimBackend(sim_options),
}
