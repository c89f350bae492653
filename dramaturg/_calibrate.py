"""Judge calibration: how well does a judge model tell a good reply from a flawed one?

A probe is a context with a good reply and a reply carrying one known flaw (a wrong fact, an
omitted required fact, a broken policy, padding, the wrong language or tone, unsafe advice).
Each probe is judged in both orders, exactly as a run judges its candidate pairs, and both
replies are scored by the critic so the run's margin rule can be applied. The report holds
raw accuracy, position consistency, length bias and tie rate — and the accuracy and coverage
of the verdicts that survive the run's own pairing rules, which is what a run ships.

Every call goes through the gateway, so a calibration is cached and replays for free.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dramaturg._errors import ConfigError, ReplyParseError
from dramaturg._gateway import Gateway, GatewayStats
from dramaturg._model import (
    Backend,
    GenerationParams,
    Message,
    ModelRequest,
    ModelSpec,
    ResponseFormat,
    RoleName,
)
from dramaturg._review import critique_format
from dramaturg.agents import critic_prompt, critique_request, judge_prompt, judge_request
from dramaturg.backends import BACKEND_FACTORIES, SimOptions, close_backends
from dramaturg.evaluators import (
    JudgeReply,
    parse_critique,
    parse_judgment,
    reply_schema,
)
from dramaturg.memory import Store, StoreWriter, utcnow

__all__ = [
    "CALIBRATION_RUBRIC",
    "CalibrationReport",
    "CalibrationRun",
    "Probe",
    "ProbeResult",
    "builtin_probes_path",
    "calibrate",
    "calibrated_judges",
    "load_probes",
    "record_calibration",
    "run_calibration",
]

T = TypeVar("T")

# The rubric every probe is judged under: each flaw kind breaks one criterion.
CALIBRATION_RUBRIC = (
    "correct: facts and arithmetic are right",
    "complete: includes what the instructions or the user require",
    "follows the instructions and their policies",
    "concise: no filler or repetition",
    "right language and tone for the user",
    "safe: no harmful advice",
)


class _Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class _ProbeFile(BaseModel):
    """One line of a probe file (JSONL); typos name the field."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    kind: str = Field(min_length=1)
    system: str = Field(min_length=1)
    conversation: list[_Turn] = Field(min_length=1)
    good: str = Field(min_length=1)
    flawed: str = Field(min_length=1)
    flaw: str = ""

    @model_validator(mode="after")
    def _ends_with_user(self) -> _ProbeFile:
        roles = [turn.role for turn in self.conversation]
        expected = ["user", "assistant"] * len(roles)
        if roles != expected[: len(roles)] or roles[-1] != "user":
            raise ValueError("conversation must alternate user/assistant, starting and ending with user")
        return self


@dataclass(frozen=True, slots=True)
class Probe:
    """A context, a good reply and a reply with one known flaw of ``kind``."""

    id: str
    kind: str
    system: str
    conversation: tuple[tuple[str, str], ...]
    good: str
    flawed: str
    flaw: str = ""
    rubric: tuple[str, ...] = CALIBRATION_RUBRIC
    principles: tuple[str, ...] = ()

    @property
    def assistant_prompt(self) -> str:
        return self.system

    @property
    def flawed_is_longer(self) -> bool:
        return len(self.flawed) > len(self.good)


def builtin_probes_path() -> Path:
    """The shipped probe set: 72 probes, 12 of each of 6 flaw kinds."""
    return Path(str(files("dramaturg.evaluators") / "probes" / "judge_probes.jsonl"))


def load_probes(path: str | Path | None = None) -> list[Probe]:
    """Probes from a JSONL file (one object per line), or the shipped set.

    Raises:
        ConfigError: the file is missing or a line is malformed (names the line and field).
    """
    source = Path(path) if path is not None else builtin_probes_path()
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read probes ({exc.strerror or exc})") from exc
    probes: list[Probe] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = _ProbeFile.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "line"
            raise ConfigError(f"{source}:{number}: field '{where}': {first['msg']}") from exc
        probes.append(
            Probe(
                id=row.id,
                kind=row.kind,
                system=row.system,
                conversation=tuple((turn.role, turn.content) for turn in row.conversation),
                good=row.good,
                flawed=row.flawed,
                flaw=row.flaw,
            )
        )
    if not probes:
        raise ConfigError(f"{source}: no probes")
    ids = [probe.id for probe in probes]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{source}: probe ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return probes


def spread(probes: Sequence[Probe], limit: int | None) -> list[Probe]:
    """At most ``limit`` probes, taken round-robin across kinds so every kind is represented."""
    if limit is None or limit >= len(probes):
        return list(probes)
    by_kind: dict[str, list[Probe]] = {}
    for probe in probes:
        by_kind.setdefault(probe.kind, []).append(probe)
    picked: list[Probe] = []
    queues = list(by_kind.values())
    while len(picked) < limit:
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


Verdict = Literal["good", "flawed", "tie", "failed"]


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Both-order verdicts on one probe, and the critic's scores of its two replies."""

    probe: Probe
    good_first: Verdict  # the judge's pick with the good reply shown as A
    flawed_first: Verdict  # ... shown as B
    good_score: float | None = None
    flawed_score: float | None = None

    @property
    def verdicts(self) -> tuple[Verdict, Verdict]:
        return self.good_first, self.flawed_first

    @property
    def consistent(self) -> bool:
        return self.good_first == self.flawed_first and self.good_first != "failed"

    def survives(self, min_margin: float | None) -> bool:
        """Would a run pair this? Both orders name the same winner and the margin clears."""
        if not self.consistent or self.good_first == "tie":
            return False
        if min_margin is None:
            return True
        if self.good_score is None or self.flawed_score is None:
            return False
        winner, loser = (
            (self.good_score, self.flawed_score)
            if self.good_first == "good"
            else (self.flawed_score, self.good_score)
        )
        return winner - loser >= min_margin


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(slots=True)
class CalibrationReport:
    judge: str
    critic: str | None
    min_margin: float | None
    probe_set: str
    results: list[ProbeResult] = field(default_factory=list)

    def _verdicts(self, results: Sequence[ProbeResult] | None = None) -> list[Verdict]:
        return [v for r in (self.results if results is None else results) for v in r.verdicts]

    def accuracy(self, results: Sequence[ProbeResult] | None = None) -> float | None:
        """Share of all verdicts (both orders) that picked the good reply; failures count wrong."""
        verdicts = self._verdicts(results)
        return _share(verdicts.count("good"), len(verdicts))

    @property
    def position_consistency(self) -> float | None:
        """Share of probes judged alike in both orders (the rest flipped with the order)."""
        return _share(sum(r.consistent for r in self.results), len(self.results))

    @property
    def tie_rate(self) -> float | None:
        verdicts = self._verdicts()
        return _share(verdicts.count("tie"), len(verdicts))

    @property
    def parse_failures(self) -> int:
        return self._verdicts().count("failed")

    def length_bias(self) -> tuple[float | None, float | None]:
        """Accuracy when the flawed reply is the longer one, and when it is the shorter one."""
        longer = [r for r in self.results if r.probe.flawed_is_longer]
        shorter = [r for r in self.results if not r.probe.flawed_is_longer]
        return self.accuracy(longer) if longer else None, self.accuracy(shorter) if shorter else None

    @property
    def survivors(self) -> list[ProbeResult]:
        return [r for r in self.results if r.survives(self.min_margin)]

    @property
    def survivor_accuracy(self) -> float | None:
        """Of the probes a run would pair, the share that chose the good reply."""
        kept = self.survivors
        return _share(sum(r.good_first == "good" for r in kept), len(kept))

    @property
    def coverage(self) -> float | None:
        return _share(len(self.survivors), len(self.results))

    def by_kind(self) -> dict[str, list[ProbeResult]]:
        kinds: dict[str, list[ProbeResult]] = {}
        for result in self.results:
            kinds.setdefault(result.probe.kind, []).append(result)
        return dict(sorted(kinds.items()))


async def _ask(
    gateway: Gateway,
    spec: ModelSpec,
    role: RoleName,
    system: str,
    request: str,
    parse: Callable[[str], T],
    response_format: ResponseFormat,
    params: GenerationParams,
    seed: int,
    attempts: int = 3,
) -> T | None:
    """A structured reply, re-asked (bounded) while it does not parse, as the run's roles do."""
    messages: tuple[Message, ...] = (Message("user", request),)
    for _ in range(attempts):
        outcome = await gateway.complete(
            ModelRequest(
                backend=spec.backend,
                model=spec.model,
                role=role,
                system=system,
                messages=messages,
                params=params,
                seed=seed,
                response_format=response_format,
            )
        )
        text = outcome.response.text
        try:
            return parse(text)
        except ReplyParseError as exc:
            messages += (
                Message("assistant", text),
                Message("user", f"Your reply could not be used ({exc}). Reply again with JSON only."),
            )
    return None


_JUDGMENT = ResponseFormat.from_schema("judgment", reply_schema(JudgeReply))


async def _judge_probe(
    probe: Probe,
    index: int,
    gateway: Gateway,
    judge: ModelSpec,
    critic: ModelSpec | None,
    params: GenerationParams,
) -> ProbeResult:
    history = probe.conversation

    async def verdict(first: str, second: str, good_letter: str) -> Verdict:
        reply = await _ask(
            gateway,
            judge,
            "verifier",
            judge_prompt(probe),
            judge_request(history, first, second),
            parse_judgment,
            _JUDGMENT,
            params,
            seed=index,
        )
        if reply is None:
            return "failed"
        if reply.winner == "tie":
            return "tie"
        return "good" if reply.winner == good_letter else "flawed"

    async def score(text: str) -> float | None:
        if critic is None:
            return None
        reply = await _ask(
            gateway,
            critic,
            "critic",
            critic_prompt(probe),
            critique_request(history, text),
            lambda raw: parse_critique(raw, probe.rubric),
            critique_format(probe.rubric),
            params,
            seed=index,
        )
        return reply.overall if reply is not None else None

    good_first = await verdict(probe.good, probe.flawed, "A")
    flawed_first = await verdict(probe.flawed, probe.good, "B")
    return ProbeResult(probe, good_first, flawed_first, await score(probe.good), await score(probe.flawed))


async def calibrate(
    probes: Sequence[Probe],
    gateway: Gateway,
    *,
    judge: ModelSpec,
    critic: ModelSpec | None,
    min_margin: float | None,
    probe_set: str = "builtin",
    params: GenerationParams | None = None,
    concurrency: int = 4,
    on_probe: Callable[[], None] | None = None,
) -> CalibrationReport:
    """Judge every probe in both orders (and score both replies with ``critic``, if given).

    Args:
        min_margin: the run's margin rule for the survivors; None applies only the both-order
            rule (no critic needed).
    """
    # Judges and critics are asked like in a run, but cooler: calibration measures the
    # model's preference, not its sampling noise.
    params = params or GenerationParams(temperature=0.0, max_tokens=400)
    slots = asyncio.Semaphore(concurrency)
    report = CalibrationReport(str(judge), str(critic) if critic else None, min_margin, probe_set)

    async def one(index: int, probe: Probe) -> ProbeResult:
        async with slots:
            result = await _judge_probe(probe, index, gateway, judge, critic, params)
        if on_probe:
            on_probe()
        return result

    report.results = list(await asyncio.gather(*(one(i, p) for i, p in enumerate(probes))))
    return report


def record_calibration(store: Store, report: CalibrationReport, calibration_id: str) -> None:
    """Store the report in ``metrics`` under ``calibration_id`` (its ``run_id``).

    ``scenario`` is NULL for the totals and the flaw kind for per-kind accuracy; every
    ``detail`` names the judge, critic and probe set.
    """
    base = {
        "judge": report.judge,
        "critic": report.critic,
        "min_margin": report.min_margin,
        "probe_set": report.probe_set,
        "probes": len(report.results),
    }
    longer, shorter = report.length_bias()
    values: list[tuple[str | None, str, float | None, dict[str, object]]] = [
        (None, "calibration_accuracy", report.accuracy(), {}),
        (None, "calibration_position_consistency", report.position_consistency, {}),
        (None, "calibration_tie_rate", report.tie_rate, {}),
        (None, "calibration_accuracy_flawed_longer", longer, {}),
        (None, "calibration_accuracy_flawed_shorter", shorter, {}),
        (None, "calibration_survivor_accuracy", report.survivor_accuracy, {"kept": len(report.survivors)}),
        (None, "calibration_coverage", report.coverage, {}),
        (None, "calibration_parse_failures", float(report.parse_failures), {}),
    ]
    for kind, results in report.by_kind().items():
        values.append((kind, "calibration_accuracy", report.accuracy(results), {"probes": len(results)}))
    now = utcnow()
    rows = [
        [calibration_id, scenario, name, value, json.dumps({**base, **extra}), now]
        for scenario, name, value, extra in values
    ]
    with store.transaction() as con:
        con.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?)", rows)


def calibrated_judges(store: Store) -> set[str]:
    """The judge models (``backend:model``) calibrated in this store."""
    rows = store.sql(
        "SELECT DISTINCT detail->>'judge' FROM metrics "
        "WHERE name = 'calibration_accuracy' AND scenario IS NULL"
    )
    return {row[0] for row in rows if row[0]}


@dataclass(frozen=True, slots=True)
class CalibrationRun:
    """What ``dramaturg calibrate`` asks for."""

    judge: str
    critic: str | None = None  # defaults to the judge; None with margin=False
    margin: bool = True
    min_margin: float = 1.0
    probes: str | None = None  # a JSONL file; None for the shipped set
    limit: int | None = None
    base_url: str | None = None
    concurrency: int = 4
    timeout_s: float = 120.0


async def run_calibration(
    settings: CalibrationRun,
    db: str | Path,
    *,
    on_start: Callable[[int], None] | None = None,
    on_probe: Callable[[], None] | None = None,
    backends: dict[str, Backend] | None = None,
) -> tuple[str, CalibrationReport, GatewayStats]:
    """Calibrate a judge into the store at ``db``: returns the calibration id, report and call stats.

    Raises:
        ConfigError: a bad model spec or probe file.
    """
    known = frozenset(BACKEND_FACTORIES)
    judge = ModelSpec.parse(settings.judge, known_backends=known)
    critic = None
    if settings.margin:
        critic = ModelSpec.parse(settings.critic, known_backends=known) if settings.critic else judge
    probes = spread(load_probes(settings.probes), settings.limit)
    if backends is None:
        names = {judge.backend} | ({critic.backend} if critic else set())
        backends = {
            name: BACKEND_FACTORIES[name](
                sim_options=SimOptions(), base_url=settings.base_url, timeout_s=settings.timeout_s
            )
            for name in names
        }
    calibration_id = f"calibration-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    try:
        store = Store.open(db)
    except BaseException:
        await close_backends(backends)
        raise
    writer = StoreWriter(store)
    try:
        gateway = Gateway(
            backends,
            writer,
            run_id=calibration_id,
            concurrency=settings.concurrency,
            timeout_s=settings.timeout_s,
        )
        if on_start:
            on_start(len(probes))
        report = await calibrate(
            probes,
            gateway,
            judge=judge,
            critic=critic,
            min_margin=settings.min_margin if settings.margin else None,
            probe_set=settings.probes or "builtin",
            concurrency=settings.concurrency,
            on_probe=on_probe,
        )
        await writer.run(record_calibration, store, report, calibration_id)
    finally:
        await close_backends(backends)
        writer.close()
        store.close()
    return calibration_id, report, gateway.stats
