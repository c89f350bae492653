"""Built-in scenario: rebooking a disrupted flight through an airline's booking system.

The booking system is not code we have: its tools are declared by schema only and answered by
the tool simulator role, which is told the episode's facts (the traveller's booking), so what
the traveller says and what the system returns agree.
"""

from __future__ import annotations

from dramaturg.scenarios import CheckContext, CheckResult, Persona, Scenario, SimulatedTool, Stage

_BOOKING = {
    "type": "object",
    "properties": {
        "booking_id": {"type": "string"},
        "passenger": {"type": "string"},
        "flight_number": {"type": "string"},
        "origin": {"type": "string"},
        "destination": {"type": "string"},
        "date": {"type": "string"},
        "status": {"type": "string", "enum": ["cancelled", "delayed", "confirmed"]},
    },
    "required": ["booking_id", "flight_number", "status"],
}

find_booking = SimulatedTool(
    name="find_booking",
    description="Find a booking by its id: passenger, flight, route, date and status.",
    parameters={
        "type": "object",
        "properties": {"booking_id": {"type": "string", "description": "e.g. QX-48213"}},
        "required": ["booking_id"],
        "additionalProperties": False,
    },
    result_schema=_BOOKING,
)

search_flights = SimulatedTool(
    name="search_flights",
    description="Search the flights between two airports on a date.",
    parameters={
        "type": "object",
        "properties": {
            "origin": {"type": "string"},
            "destination": {"type": "string"},
            "date": {"type": "string", "description": "YYYY-MM-DD"},
        },
        "required": ["origin", "destination", "date"],
        "additionalProperties": False,
    },
    result_schema={
        "type": "object",
        "properties": {
            "flights": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"flight_number": {"type": "string"}, "departs": {"type": "string"}},
                },
            }
        },
        "required": ["flights"],
    },
)

rebook_flight = SimulatedTool(
    name="rebook_flight",
    description="Move a booking to another flight; the booking must have been found first.",
    parameters={
        "type": "object",
        "properties": {
            "booking_id": {"type": "string"},
            "flight_number": {"type": "string", "description": "the new flight"},
        },
        "required": ["booking_id", "flight_number"],
        "additionalProperties": False,
    },
    result_schema={
        "type": "object",
        "properties": {
            "booking_id": {"type": "string"},
            "flight_number": {"type": "string"},
            "status": {"type": "string", "enum": ["confirmed", "waitlisted"]},
        },
        "required": ["booking_id", "flight_number", "status"],
    },
)


def rebooked_only_after_finding_the_booking(ctx: CheckContext) -> CheckResult:
    """The system's rule: a booking is looked up before it is changed."""
    rebooked = any(call.name == "rebook_flight" and call.ok for call in ctx.tool_calls)
    if rebooked and not ctx.called("find_booking", before="rebook_flight"):
        return CheckResult(False, "rebook_flight before find_booking")
    return CheckResult(True)


def rebooked_the_booking_that_was_found(ctx: CheckContext) -> CheckResult:
    """The booking changed is the one looked up, not a mistyped id."""
    calls = [*ctx.earlier_tool_calls, *ctx.tool_calls]
    found = {str(c.arguments.get("booking_id")) for c in calls if c.name == "find_booking" and c.ok}
    for call in ctx.tool_calls:
        booking = str(call.arguments.get("booking_id"))
        if call.name == "rebook_flight" and call.ok and found and booking not in found:
            return CheckResult(False, f"rebooked {booking}, but found {', '.join(sorted(found))}")
    return CheckResult(True)


def tool_calls_valid(ctx: CheckContext) -> CheckResult:
    """Every tool call names a tool and passes its schema."""
    bad = [call for call in ctx.tool_calls if call.status == "invalid"]
    return CheckResult(not bad, "; ".join(f"{call.name}: {call.result[:120]}" for call in bad))


scenario = Scenario(
    name="airline-rebooking",
    description="A traveller whose flight was disrupted asks to be rebooked.",
    assistant_prompt=(
        "You are an airline's customer service agent. Find the booking with the booking system "
        "before you change it, offer the traveller the next suitable flight, and confirm the new "
        "flight number. Keep answers short."
    ),
    personas=[
        Persona(
            name="Ines",
            traits=["hurried"],
            mood="stressed",
            goal="get rebooked from {origin} to {destination}, because your flight was {disruption}",
            hidden_facts={"booking id": "{booking_id}", "travel date": "{date}"},
        ),
        Persona(
            name="Omar",
            traits=["polite", "patient"],
            mood="calm",
            goal="move your trip from {origin} to {destination} to another flight; yours was {disruption}",
            hidden_facts={"booking id": "{booking_id}", "travel date": "{date}"},
        ),
    ],
    variables={
        "origin": ["Lisbon", "Oslo", "Dublin", "Vienna"],
        "destination": ["Berlin", "Madrid", "Toronto", "Athens"],
        "disruption": ["cancelled", "delayed by six hours"],
        "booking_id": ["QX-48213", "QX-50977", "QX-61402", "QX-73318"],
        "date": ["2026-12-18", "2026-12-21", "2027-01-04"],
        "flight_number": ["QX 215", "QX 480", "QX 902"],
    },
    stages=[
        Stage(name="explain", instruction="Explain that your flight from {origin} was {disruption}."),
        Stage(name="details", instruction="Give the booking details the agent asks for."),
        Stage(name="choose", instruction="Ask to be rebooked on the next flight."),
        Stage(name="close", instruction="Thank the agent and say goodbye.", terminal=True),
    ],
    max_turns=6,
    rubric=["finds the booking first", "offers a concrete new flight", "concise"],
    tools=[find_booking, search_flights, rebook_flight],
    checks=[rebooked_only_after_finding_the_booking, rebooked_the_booking_that_was_found, tool_calls_valid],
)
