"""A backend that calls a plain Python function: the unit-test double of a model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from dramaturg._model import ModelRequest, ModelResponse

__all__ = ["FunctionBackend"]

Responder = Callable[[ModelRequest], str | ModelResponse | Awaitable[str | ModelResponse]]


class FunctionBackend:
    """Answers each request with ``fn(request)``; counts calls.

    Example:
        >>> backend = FunctionBackend(lambda request: f"you said {request.messages[-1].content}")
        >>> gateway_backends = {"sim": backend}  # run(config, db, backends=gateway_backends)
    """

    def __init__(self, fn: Responder, *, name: str = "function"):
        self.name = name
        self._fn = fn
        self.requests: list[ModelRequest] = []

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        result = self._fn(request)
        if not isinstance(result, str | ModelResponse):
            result = await result
        if isinstance(result, ModelResponse):
            return result
        return ModelResponse(text=result, input_tokens=0, output_tokens=len(result.split()))
