"""Role agents over the gateway: the autogen adapter, per-episode binding, revision swap."""

from __future__ import annotations

import asyncio
from pathlib import Path

from autogen_core.models import AssistantMessage, SystemMessage, UserMessage
from dramaturg.agents import RoleAgent, user_simulator_prompt
from dramaturg.agents._client import to_request_messages
from dramaturg.memory import Store, StoreWriter
from dramaturg.scenarios import load_scenario

from dramaturg import FunctionBackend, Message, ModelRequest, ModelSpec
from dramaturg._gateway import Gateway
from dramaturg.backends import respond_text


def test_messages_merge_into_alternating_roles() -> None:
    system, messages = to_request_messages(
        [
            SystemMessage(content="be brief"),
            UserMessage(content="assistant said hi", source="assistant"),
            UserMessage(content="[Director] do X", source="director"),
            AssistantMessage(content="ok", source="me"),
        ]
    )
    assert system == "be brief"
    assert messages == (Message("user", "assistant said hi\n\n[Director] do X"), Message("assistant", "ok"))


def test_role_agent_binds_episode_and_role_and_can_swap_its_reply(tmp_path: Path) -> None:
    seen: list[ModelRequest] = []

    def answer(request: ModelRequest) -> str:
        seen.append(request)
        if request.messages[-1].content.startswith("[Revision request]"):
            return "revised reply"
        return f"reply {len(seen)}"

    async def main() -> None:
        store = Store.open(tmp_path / "s.duckdb")
        writer = StoreWriter(store)
        gateway = Gateway({"function": FunctionBackend(answer)}, writer)
        agent = RoleAgent(
            "assistant", "SYSTEM", gateway, spec=ModelSpec("function", "m"), episode_id="ep", seed=3
        )
        first = await agent.respond(("user", "hello"))
        revision = await agent.revise("[Revision request]\nFeedback:\n- be better")
        second = await agent.respond(("user", "and then?"))
        assert (first.text, revision.text, second.text) == ("reply 1", "revised reply", "reply 3")
        calls = store.sql("SELECT episode_id, role, model FROM llm_calls ORDER BY created_at")
        assert calls == [("ep", "assistant", "m")] * 3
        writer.close()
        store.close()

    asyncio.run(main())
    assert seen[2].system == "SYSTEM"
    assert seen[2].seed == 3
    # The assistant's own context holds the revision, not the original.
    assert seen[2].messages == (
        Message("user", "hello"),
        Message("assistant", "revised reply"),
        Message("user", "and then?"),
    )


def test_sim_user_reveals_hidden_facts_only_when_asked() -> None:
    spec = load_scenario("support-refund").scenario.instantiate(4)
    prompt = user_simulator_prompt(spec)
    order_id = dict(spec.hidden_facts).get("order id") or dict(spec.hidden_facts)["order number"]
    note = "[Director] Stage: resolution. What to do now: Ask whether you can get a refund."
    unasked = respond_text(prompt, [("user", "We have a sale on kettles. " + note)], seed=1)
    asked = respond_text(prompt, [("user", "Could you share your order id and order number? " + note)], 1)
    assert order_id not in unasked
    assert order_id in asked


def test_sim_is_deterministic_and_varied() -> None:
    spec = load_scenario("support-refund").scenario.instantiate(4)
    prompt = user_simulator_prompt(spec)
    note = [("user", "[Director] Stage: greet. What to do now: Say hello.")]
    assert respond_text(prompt, note, 1) == respond_text(prompt, note, 1)
    assert len({respond_text(prompt, note, seed) for seed in range(20)}) >= 10
