"""Test doubles that are product code: a real local HTTP fake of the model APIs.

Example::

    from dramaturg.testing import FakeAPI, FakeAPIConfig

    with FakeAPI.start(FakeAPIConfig(responder="echo", rate_429=0.2)) as fake:
        client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="k")
        ...
        assert fake.stats()["repeats_after_200"] == 0

A critic that ignores ``response_format`` and answers in prose, for tests of loud failure::

    FakeAPIConfig(responder="dramaturg.testing._fake_api:prose_critic_responder")

The sim backend itself, tool calls included (``FakeAPIConfig(responder="sim")``), or a
responder of your own that reads the whole request and may call tools::

    @request_responder
    def look_up(request: ModelRequest) -> ModelResponse:
        ...

A real Ray cluster on 127.0.0.1 for the Ray executor (a head and worker nodes, each a
``ray start`` process stopped by its PID; needs ``dramaturg[ray]``)::

    with LocalRayCluster.start(workers=2, root=tmp_path) as cluster:
        ...  # RunConfig(..., execution=ExecutionOptions(executor="ray", ray_address=cluster.address))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dramaturg.testing._fake_api import FakeAPI, FakeAPIConfig, request_responder
    from dramaturg.testing._ray_cluster import LocalRayCluster

__all__ = ["FakeAPI", "FakeAPIConfig", "LocalRayCluster", "request_responder"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `python -m dramaturg.testing._fake_api` imports this package
    # first, and an eager import would make runpy warn that the module is already loaded.
    if name == "LocalRayCluster":
        from dramaturg.testing import _ray_cluster

        return _ray_cluster.LocalRayCluster
    if name in __all__:
        from dramaturg.testing import _fake_api

        return getattr(_fake_api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
