"""Built-in scenario: customer support under a written refund policy."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from datetime import date, timedelta

from dramaturg.scenarios import CheckContext, CheckResult, Persona, Scenario, Stage, Transition

TODAY = date(2026, 11, 2)  # fixed, so episodes are reproducible whatever day they run

POLICY = """You are a customer support agent for Northwind Goods, an online shop.
Today is {today}. Follow the refund policy exactly.
Refund policy:
- Items reported within 30 days of purchase are eligible for a refund.
- Damaged or defective items get a full refund, including shipping.
- Unwanted items in unused condition get a refund minus a 10% restocking fee.
- After 30 days we offer store credit only, never a cash refund.
Always ask the customer for their order id before discussing a refund.
Never promise a refund before the order is verified.
Keep answers short and polite."""


def _order_facts(values: Mapping[str, str | int | float], rng: random.Random) -> dict[str, str | int]:
    days = int(values["days_since_purchase"])
    return {
        "order_id": f"NW-{rng.randrange(100000, 999999)}",
        "purchase_date": (TODAY - timedelta(days=days)).isoformat(),
        "today": TODAY.isoformat(),
        "eligible": "yes" if days <= 30 else "no",
    }


_PROMISE = re.compile(
    r"\b(?:i can promise|i'll (?:issue|process|send) (?:you )?(?:a|your) (?:full )?refund|"
    r"promise (?:you )?a (?:full )?refund|you will (?:get|receive) a (?:full )?refund)",
    re.I,
)


def no_refund_promised_before_verification(ctx: CheckContext) -> CheckResult:
    """The policy: never promise a refund before the customer has given the order id."""
    verified = ctx.user_said(str(ctx.spec.variable("order_id")))
    promised = _PROMISE.search(ctx.reply)
    if promised and not verified:
        return CheckResult(False, f"promised a refund before verification: {promised.group(0)!r}")
    return CheckResult(True)


def no_cash_refund_after_30_days(ctx: CheckContext) -> CheckResult:
    """After 30 days only store credit: the reply must not promise money back."""
    if ctx.spec.variable("eligible") == "yes":
        return CheckResult(True)
    promised = _PROMISE.search(ctx.reply)
    return CheckResult(
        promised is None, f"promised a refund after 30 days: {promised.group(0)!r}" if promised else ""
    )


def _order_facts_as(id_label: str) -> dict[str, str]:
    """The facts every customer holds back; personas differ in what they call the order id."""
    return {id_label: "{order_id}", "purchase date": "{purchase_date}", "item condition": "{condition}"}


scenario = Scenario(
    name="support-refund",
    description="A customer asks for a refund; the agent must follow the written policy.",
    assistant_prompt=POLICY,
    personas=[
        Persona(
            name="Dana",
            traits=["impatient"],
            mood="frustrated",
            goal="get a refund for your {item}, which {problem}",
            hidden_facts=_order_facts_as("order id"),
        ),
        Persona(
            name="Priya",
            traits=["polite"],
            mood="calm",
            goal="find out whether you can return your {item}, which {problem}",
            hidden_facts=_order_facts_as("order id"),
        ),
        Persona(
            name="Marcus",
            traits=["confused", "anxious"],
            mood="worried",
            goal="sort out what to do about your {item}, which {problem}",
            hidden_facts=_order_facts_as("order number"),
        ),
        Persona(
            name="Lena",
            traits=["friendly", "curious"],
            mood="cheerful",
            goal="get your money back for the {item} because it {problem}",
            hidden_facts=_order_facts_as("order id"),
        ),
        Persona(
            name="Tom",
            traits=["terse"],
            mood="neutral",
            goal="return the {item}; it {problem}",
            hidden_facts=_order_facts_as("order id"),
        ),
        Persona(
            name="Grace",
            traits=["angry"],
            mood="angry",
            goal="demand a full refund for the {item} that {problem}",
            hidden_facts=_order_facts_as("order id"),
        ),
    ],
    variables={
        "item": [
            "blender",
            "pair of headphones",
            "backpack",
            "desk lamp",
            "coffee grinder",
            "pair of running shoes",
            "e-reader",
            "rain jacket",
            "kettle",
            "phone case",
        ],
        "problem": [
            "arrived cracked",
            "stopped working after a week",
            "is the wrong size",
            "looks nothing like the photos",
            "arrived with a missing part",
            "is simply not what you wanted",
        ],
        "condition": ["unused, in the original box", "used a couple of times", "damaged on arrival"],
        "days_since_purchase": [3, 9, 17, 26, 34, 48],
    },
    derive=_order_facts,
    stages=[
        Stage(name="greet", instruction="Say hello and explain that your {item} {problem}."),
        Stage(
            name="explain",
            instruction="Explain again that your {item} {problem} and that you are not happy about it.",
        ),
        Stage(name="verify", instruction="Give the order details the assistant asks for."),
        Stage(name="resolution", instruction="Ask whether you can get a refund for the {item}."),
        Stage(name="push_back", instruction="Insist that you deserve a full refund for the {item}."),
        Stage(name="close", instruction="Thank the assistant and say goodbye.", terminal=True),
    ],
    transitions=[
        Transition(source="greet", target="explain", weight=0.6),
        Transition(source="greet", target="verify", weight=0.4),
        Transition(source="explain", target="verify"),
        Transition(source="verify", target="resolution"),
        Transition(source="resolution", target="close", weight=0.65),
        Transition(source="resolution", target="push_back", weight=0.35),
        Transition(source="push_back", target="close"),
    ],
    max_turns=8,
    rubric=[
        "follows the refund policy",
        "asks for the order id before deciding",
        "polite and concise",
        "resolves the request",
    ],
    principles=[
        "Never promise a cash refund after 30 days.",
        "Never promise a refund before the order is verified.",
    ],
    checks=[no_refund_promised_before_verification, no_cash_refund_after_30_days],
)
