"""Built-in scenario: customer support under a written refund policy, with the shop's tools.

The assistant can look orders up, refund, give store credit and escalate, against a small
shop whose one order is the persona's own hidden order: what the customer knows and what the
tools return agree. Checks judge the words (no promise before verification, no cash after 30
days) and the trajectory (a refund only after a lookup, within policy; no invalid or repeated
calls).
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from dramaturg.scenarios import (
    CheckContext,
    CheckResult,
    EpisodeSpec,
    Persona,
    Scenario,
    Stage,
    Transition,
)

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
Always look the order up with the tools before you refund or give credit.
Never refund more than the order's price.
Always escalate to a supervisor when the customer insists beyond the policy.
Keep answers short and polite."""


def _order_facts(values: Mapping[str, str | int | float], rng: random.Random) -> dict[str, str | int]:
    days = int(values["days_since_purchase"])
    return {
        "order_id": f"NW-{rng.randrange(100000, 999999)}",
        "purchase_date": (TODAY - timedelta(days=days)).isoformat(),
        "today": TODAY.isoformat(),
        "eligible": "yes" if days <= 30 else "no",
    }


@dataclass
class Order:
    order_id: str
    item: str
    purchase_date: str
    days_since_purchase: int
    price: float
    condition: str
    refundable: bool


@dataclass
class Shop:
    """The episode's world: the customer's order, and what the agent did about it."""

    orders: dict[str, Order]
    refunds: list[tuple[str, float]] = field(default_factory=list)
    store_credit: list[tuple[str, float]] = field(default_factory=list)
    escalations: list[str] = field(default_factory=list)


def shop(spec: EpisodeSpec) -> Shop:
    """The shop as this customer's story has it (their order is the one they will quote)."""
    order_id = str(spec.variable("order_id"))
    days = int(spec.variable("days_since_purchase"))
    # The price follows from the order id, so no random draw shifts the episode's other variables.
    price = 12.0 + int(order_id.split("-")[1]) % 180 + 0.99
    order = Order(
        order_id=order_id,
        item=str(spec.variable("item")),
        purchase_date=str(spec.variable("purchase_date")),
        days_since_purchase=days,
        price=round(price, 2),
        condition=str(spec.variable("condition")),
        refundable=days <= 30,
    )
    return Shop(orders={order_id: order})


def _order(env: Shop, order_id: str) -> Order:
    order = env.orders.get(order_id.strip().upper().lstrip("#"))
    if order is None:
        raise KeyError(f"no order {order_id!r}")
    return order


def lookup_order(env: Shop, order_id: str) -> dict[str, object]:
    """Look up an order by its id: item, purchase date, price, condition, and whether it is refundable."""
    order = _order(env, order_id)
    return {
        "order_id": order.order_id,
        "item": order.item,
        "purchase_date": order.purchase_date,
        "days_since_purchase": order.days_since_purchase,
        "price": order.price,
        "condition": order.condition,
        "refundable": order.refundable,
    }


def issue_refund(env: Shop, order_id: str, amount: float, reason: str = "") -> dict[str, object]:
    """Refund money to the customer for an order (policy: within 30 days, at most the price)."""
    order = _order(env, order_id)
    env.refunds.append((order.order_id, amount))
    return {"order_id": order.order_id, "refunded": amount, "reason": reason}


def issue_store_credit(env: Shop, order_id: str, amount: float) -> dict[str, object]:
    """Give the customer store credit for an order (the policy's only option after 30 days)."""
    order = _order(env, order_id)
    env.store_credit.append((order.order_id, amount))
    return {"order_id": order.order_id, "store_credit": amount}


def escalate(env: Shop, order_id: str, summary: str = "") -> dict[str, object]:
    """Hand the case to a human supervisor, with a short summary."""
    env.escalations.append(order_id)
    return {"escalated": True, "ticket": f"ESC-{len(env.escalations):03d}"}


def refund_only_after_lookup(ctx: CheckContext) -> CheckResult:
    """A refund or credit only for an order the agent looked up first."""
    for action in ("issue_refund", "issue_store_credit"):
        acted = any(call.name == action and call.ok for call in ctx.tool_calls)
        if acted and not ctx.called("lookup_order", before=action):
            return CheckResult(False, f"{action} before lookup_order")
    return CheckResult(True)


def refund_within_policy(ctx: CheckContext) -> CheckResult:
    """Money back only within 30 days, and never more than the order's price."""
    env: Shop = ctx.environment
    for call in ctx.tool_calls:
        if call.name != "issue_refund" or not call.ok:
            continue
        order = env.orders.get(str(call.arguments.get("order_id", "")).strip().upper())
        amount = float(call.arguments.get("amount", 0))
        if order is not None and not order.refundable:
            return CheckResult(False, f"refunded {amount} {order.days_since_purchase} days after purchase")
        if order is not None and amount > order.price:
            return CheckResult(False, f"refunded {amount}, more than the price {order.price}")
    return CheckResult(True)


def tool_calls_valid(ctx: CheckContext) -> CheckResult:
    """Every tool call names a tool and passes its schema."""
    bad = [call for call in ctx.tool_calls if call.status == "invalid"]
    return CheckResult(not bad, "; ".join(f"{call.name}: {call.result[:120]}" for call in bad))


def no_repeated_calls(ctx: CheckContext) -> CheckResult:
    """No call repeated with the same arguments in one reply: an unneeded call."""
    seen: set[tuple[str, str]] = set()
    for call in ctx.tool_calls:
        key = (call.name, repr(sorted(call.arguments.items())))
        if key in seen:
            return CheckResult(False, f"{call.name} called twice with {call.arguments}")
        seen.add(key)
    return CheckResult(True)


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
    checks=[
        no_refund_promised_before_verification,
        no_cash_refund_after_30_days,
        refund_only_after_lookup,
        refund_within_policy,
        tool_calls_valid,
        no_repeated_calls,
    ],
    tools=[lookup_order, issue_refund, issue_store_credit, escalate],
    environment=shop,
)
