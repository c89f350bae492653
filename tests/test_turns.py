"""Turn validation on text real models wrote (Qwen2.5-Coder 0.5B and 1.5B, sampled here while
building the user simulator, and the examples of the issue that asked for it), not on phrases
we invented to match our own detector."""

from __future__ import annotations

import pytest
from dramaturg.agents import asked_facts, user_turn_request
from dramaturg.evaluators import TurnContext, clean_turn, is_role_flip, validate_turn
from dramaturg.scenarios import load_scenario

FACTS = (
    ("order id", "NW-350567"),
    ("purchase date", "2026-10-30"),
    ("item condition", "used a couple of times"),
)
OPENING = "Hi. The phone case I ordered is the wrong size and I want a full refund."
AGENT = (
    "Hello! I'm sorry to hear about the phone case. Could you please provide your order ID so I can "
    "look into this for you?"
)


def user_context(**changes: object) -> TurnContext:
    settings: dict[str, object] = {
        "speaker": "user",
        "history": (("user", OPENING), ("assistant", AGENT)),
        "persona": "Grace",
        "facts": FACTS,
        "given": "demand a full refund for the phone case that is the wrong size",
        "instruction": "Give the order details the assistant asks for.",
    }
    return TurnContext(**{**settings, **changes})  # type: ignore[arg-type]


def reasons(text: str, context: TurnContext | None = None) -> set[str]:
    return {p.reason for p in validate_turn(text, context or user_context())}


# Real user-simulator turns in the assistant's voice.
@pytest.mark.parametrize(
    "text",
    [
        "Hi there! It's great to hear from you. I've received your desk lamp, but unfortunately it arrived "
        "cracked. Would you like me to send you a new one?",
        "Sure. What's the order ID?",
        "Sure. Please provide me with the order ID.",
        "Yes, I know your order ID. What's the size of the phone case you ordered?",
        "Thank you for providing your order details. I will be able to check the condition of your phone "
        "case and refund it if necessary.",
        "Dear Grace,\n\nThank you for your patience. I'm sorry to hear about the phone case we ordered.",
        "Hello Grace! How can I assist you today?",
        "Hi, Grace, I'm sorry to hear that your desk lamp arrived cracked.",
        "The order ID is NW-350567. Is there something else I can help you with?",
    ],
)
def test_real_role_flips_are_caught(text: str) -> None:
    assert "role_flip" in reasons(text)


# Real user-simulator turns that wrote about the chat instead of being a message.
@pytest.mark.parametrize(
    "text",
    [
        "Sure, I'll revise the response to follow the refund policy and provide an order ID.",
        "CUSTOMER (you): I have the order details, but I want a full refund.",
        "Thank you. My order ID is NW-350567. Grace, the customer, can provide the order details to me.",
        "Sure. Give the order details to the assistant, please.",
        "Grace: Yes, my order ID is NW-350567.\n\nNext, Grace asks if this is a full refund.\n"
        "Support agent: No, I'm not sure about what you're asking.",
        "Here is the revised response: Please share your order id.",
    ],
)
def test_real_meta_commentary_is_caught(text: str) -> None:
    assert "meta" in reasons(text)


@pytest.mark.parametrize(
    "text",
    [
        "Hi! My desk lamp arrived cracked.",
        "Sure, my order ID is NW-350567.",
        "NW-350567",
        "Ugh, fine. It's NW-350567. Can I get my refund now?",
        "I used it a couple of times, is that a problem? My order is NW-350567.",
        "Hello! My desk lamp arrived cracked, and I need a refund.",
        "Can you tell me what your refund policy is?",
        "What's your return policy for used items?",
        "Thanks, that's all I needed. <<END>>",
        "I'm Grace, and honestly I'm furious about this phone case.",
        "Could you explain how I can check the answer myself?",
    ],
)
def test_genuine_user_turns_pass(text: str) -> None:
    assert reasons(text) == set()


def test_an_echo_loop_is_caught_on_either_side() -> None:
    # The second episode of the issue: user and assistant repeating each other verbatim.
    assert "echo" in reasons(AGENT.replace("Hello!", "Hi!"))
    quoted = "Order ID: NW-121250, Purchase Date: 2026-10-30, Item Condition: Unused, in the Original Box."
    assistant = TurnContext("assistant", history=(("user", OPENING), ("assistant", AGENT), ("user", quoted)))
    reply = quoted + "\n\nThank you for reaching out. We will review your order to determine the refund."
    assert "echo" in reasons(reply, assistant)
    assert (
        reasons("Thanks! Your order NW-121250 is within 30 days, so you get a full refund.", assistant)
        == set()
    )


def test_copied_instructions_invented_facts_and_cut_off_replies() -> None:
    copied = "Give the order details the assistant asks for: NW-350567."
    assert "copied_instruction" in reasons(copied)
    # Content shared with the instruction is not a copy; its imperative wording is.
    math = user_context(instruction="Ask for help solving 3x + 3 = 21 for x.", history=())
    assert reasons("Hmm. Can you give me a hand solving 3x + 3 = 21 for x?", math) == set()
    assert "invented_fact" in reasons("It's NW-999999.")
    assert "invented_fact" not in reasons("It's NW-350567, bought 2026-10-30.")
    cut = user_context(finish_reason="length")
    assert "truncated" in reasons("My order id is NW-350567 and the case", cut)
    assert reasons("   ") == {"empty"}


def test_clean_turn_strips_the_persona_label_and_quotes_only() -> None:
    assert clean_turn("Grace: Hi, my case is the wrong size.", "Grace") == "Hi, my case is the wrong size."
    assert clean_turn('"Hi, my case is the wrong size."', "Grace") == "Hi, my case is the wrong size."
    assert clean_turn("Support agent: Hi.", "Grace") == "Support agent: Hi."


def test_is_role_flip_uses_the_persona_when_given() -> None:
    assert not is_role_flip("Please provide the order ID.")  # no persona: nothing says whose id
    assert is_role_flip("Please provide the order ID.", user_context())


def test_the_cue_comes_after_the_labelled_line_and_carries_asked_facts() -> None:
    spec = load_scenario("support-refund").scenario.instantiate(3)
    stage = spec.stage_path[1]
    request = user_turn_request(spec, stage, AGENT)
    said, cue = request.split("\n\n", 1)
    assert said == f"[Assistant]: {AGENT}"
    assert cue.startswith(f"Write {spec.persona}'s next message.") and stage.instruction in cue
    order_id = dict(spec.hidden_facts)["order id"]
    assert asked_facts(spec, AGENT) == [("order id", order_id)]
    assert f"order id: {order_id}" in cue
    assert asked_facts(spec, "The order id is on the receipt.") == []  # a mention is not a question
    retry = user_turn_request(spec, stage, AGENT, ["role_flip"])
    assert f"written as the assistant, not as {spec.persona}" in retry


def test_the_assistant_may_address_the_user_by_name() -> None:
    assistant = user_context(speaker="assistant", instruction="")
    greeting = "Hello Grace! Could you share your order id so I can check the refund?"
    assert reasons(greeting, assistant) == set()


def test_malformed_end_markers_are_markers_not_dialogue() -> None:
    from dramaturg._markers import split_end_marker

    # What the live 0.5B model wrote: a bracket too few or too many.
    assert split_end_marker("<END>") == ("", "user_ended")
    assert split_end_marker("Thanks, bye! <<END>") == ("Thanks, bye!", "user_ended")
    assert split_end_marker("<END>  I'm sorry.") == ("I'm sorry.", "user_ended")
    assert split_end_marker("See <<END>> you") == ("See  you", "user_ended")
    assert split_end_marker("The END of the story.") == ("The END of the story.", None)
    # tau2-bench's three endings: done, handed over, out of scope.
    assert split_end_marker("Okay, I'll wait. <<TRANSFER>>") == ("Okay, I'll wait.", "user_transferred")
    assert split_end_marker("I don't have that. <<OUT_OF_SCOPE>>") == (
        "I don't have that.",
        "user_out_of_scope",
    )
    assert split_end_marker("<<out-of-scope>") == ("", "user_out_of_scope")
    assert split_end_marker("Please transfer me to a human.") == ("Please transfer me to a human.", None)
    assert [p.reason for p in validate_turn("<END>", TurnContext("assistant"))] == ["empty"]


def test_an_assistant_that_answers_with_a_tool_result_is_asked_again() -> None:
    # The live 0.5B, after calling escalate: the tool's JSON as its words to the customer.
    raw = '{"escalated": true, "ticket": "ESC-001"}'
    after_calls = TurnContext("assistant", called_tools=True)
    assert reasons(raw, after_calls) == {"raw_tool_result"}
    assert reasons(f"```json\n{raw}\n```", after_calls) == {"raw_tool_result"}
    assert reasons("I've escalated it: your ticket is ESC-001.", after_calls) == set()
    # Without tool calls, JSON may be just what the user asked for.
    assert reasons(raw, TurnContext("assistant")) == set()


def test_a_revision_that_repeats_its_feedback_is_asked_again() -> None:
    # The live 0.5B's revision: the reviewer's feedback, verbatim, then an answer.
    feedback = (
        "[Revision request]\nFeedback:\nCorrect reasoning briefly and keep replies short.\n"
        "- check answer_not_revealed_early failed: revealed the answer: 'x = 3'"
    )
    revised = TurnContext("assistant", feedback=feedback)
    leaked = "Correct reasoning briefly and keep replies short.\nThe correct answer is x = 6."
    assert reasons(leaked, revised) == {"meta"}
    assert reasons("Subtract 15 from both sides first: what is left?", revised) == set()
    assert reasons(leaked, TurnContext("assistant")) == set()  # only a revision has feedback
