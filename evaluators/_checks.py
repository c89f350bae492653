"""Programmatic checks: plain typed Python functions over a turn and the episode spec.

A check is user code, so it is run as untrusted: whatever it does (raise, loop forever,
return ``'yes'``, call ``os._exit``) becomes a *failed check with its reason* on that reply,
never a crash or a hang of the run. :class:`ForkedCheckRunner` runs each check in a worker
process under a time limit and kills the worker when the limit passes; :class:`InlineCheckRunner`
runs checks in the calling thread (no time limit) for code that is known to be safe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Protocol

from dramaturg.evaluators._turns import FACT_TOKEN
from dramaturg.scenarios import DEFAULT_CHECK_TIMEOUT_S, Check, CheckContext, CheckResult, EpisodeSpec

__all__ = [
    "CheckRunner",
    "CheckSuite",
    "ForkedCheckRunner",
    "InlineCheckRunner",
    "NamedResult",
    "check_outcome",
    "user_consistency",
]


@dataclass(frozen=True, slots=True)
class NamedResult:
    name: str
    passed: bool
    detail: str


class CheckRunner(Protocol):
    """Runs one check on one reply and always returns a result (only cancellation escapes)."""

    async def run(self, check: Check, context: CheckContext, timeout_s: float) -> CheckResult: ...

    def close(self) -> None: ...


def check_name(check: Check) -> str:
    return getattr(check, "__name__", repr(check))


def check_outcome(check: Check, context: CheckContext) -> CheckResult:
    """Call ``check`` and turn whatever happens into a result: the one place that judges it."""
    try:
        value = check(context)
    except Exception as exc:  # noqa: BLE001 - user code: any exception is the check's failure
        return CheckResult(False, f"raised {type(exc).__name__}: {exc}"[:500])
    if isinstance(value, CheckResult) and isinstance(value.passed, bool):
        return CheckResult(value.passed, str(value.detail))
    if isinstance(value, bool) or _is_numpy_bool(value):
        return CheckResult(bool(value))
    shown = f"{type(value).__name__} {value!r:.80}"
    return CheckResult(False, f"returned {shown}; a check returns bool or CheckResult")


def _is_numpy_bool(value: object) -> bool:
    # Checks that compute with numpy return numpy.bool_, which is not a bool subclass.
    kind = type(value)
    return kind.__module__ == "numpy" and kind.__name__ in {"bool_", "bool"}


@dataclass(frozen=True, slots=True)
class InlineCheckRunner:
    """Runs checks in the event loop's thread: no isolation and no time limit."""

    async def run(self, check: Check, context: CheckContext, timeout_s: float) -> CheckResult:
        return check_outcome(check, context)

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class CheckSuite:
    """A scenario's checks, the runner that runs them and how long each may take."""

    checks: tuple[Check, ...] = ()
    timeout_s: float = DEFAULT_CHECK_TIMEOUT_S
    runner: CheckRunner = field(default_factory=InlineCheckRunner)

    async def run(self, context: CheckContext) -> list[NamedResult]:
        """Every check on one reply, in order; a check's name is its function's name."""
        results = []
        for check in self.checks:
            result = await self.runner.run(check, context, self.timeout_s)
            results.append(NamedResult(check_name(check), result.passed, result.detail))
        return results


class _WorkerDied(Exception):
    pass


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    generation: int

    async def ask(self, request: tuple[int, CheckContext], timeout_s: float) -> tuple[bool, str]:
        self.conn.send(request)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await asyncio.wait_for(ready, timeout_s)
        finally:
            loop.remove_reader(fd)
        try:
            passed, detail = self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(1)
            raise _WorkerDied(f"exit code {self.process.exitcode}") from exc
        return bool(passed), str(detail)

    def kill(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class ForkedCheckRunner:
    """Runs checks in forked worker processes, each call under a time limit.

    Workers are forked on demand (at most ``max_workers``) and inherit the checks, so a check
    may be a closure or a lambda defined in a notebook: nothing is pickled but its context
    and result. A check that overruns its limit, or kills its process, costs the worker: it
    is killed and the next call forks a fresh one. Workers ignore Ctrl-C (the run handles
    it) and are killed by :meth:`close`, or by the kernel when the parent dies (Linux).
    """

    def __init__(self, max_workers: int = 2):
        self._context = multiprocessing.get_context("fork")
        self._checks: list[Check] = []
        self._index: dict[int, int] = {}
        self._idle: list[_Worker] = []
        self._workers: dict[int, _Worker] = {}
        self._slots = asyncio.Semaphore(max_workers)

    async def run(self, check: Check, context: CheckContext, timeout_s: float) -> CheckResult:
        index = self._register(check)
        async with self._slots:
            worker = self._take()
            try:
                passed, detail = await worker.ask((index, context), timeout_s)
            except TimeoutError:
                self._discard(worker)
                return CheckResult(False, f"timed out after {timeout_s:g} s (the check was stopped)")
            except _WorkerDied as exc:
                self._discard(worker)
                return CheckResult(False, f"its process died ({exc})")
            except BaseException:
                self._discard(worker)  # cancelled mid-check: its state is unknown
                raise
            self._idle.append(worker)
            return CheckResult(passed, detail)

    def close(self) -> None:
        for worker in list(self._workers.values()):
            worker.kill()
        self._workers.clear()
        self._idle.clear()

    def _register(self, check: Check) -> int:
        if id(check) not in self._index:
            # Idle workers were forked without this check: they retire on their next use.
            self._index[id(check)] = len(self._checks)
            self._checks.append(check)
        return self._index[id(check)]

    def _take(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.generation == len(self._checks) and worker.process.is_alive():
                return worker
            self._discard(worker)
        parent, child = self._context.Pipe()
        process = self._context.Process(target=_serve, args=(child, tuple(self._checks)), daemon=True)
        process.start()
        child.close()
        worker = _Worker(process, parent, generation=len(self._checks))
        self._workers[id(worker)] = worker
        return worker

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.pop(id(worker), None)


def _serve(conn: Connection, checks: tuple[Check, ...]) -> None:
    """A worker's loop: answer (check index, context) requests until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    while True:
        try:
            index, context = conn.recv()
        except (EOFError, OSError):
            return
        result = check_outcome(checks[index], context)
        conn.send((result.passed, result.detail))


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when its parent dies, even mid-loop (elsewhere: best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def user_consistency(spec: EpisodeSpec, turns: Sequence[tuple[str, str, bool]]) -> CheckResult:
    """Did the user simulator stay in character and state only facts it has?

    Args:
        turns: (role, content, role_flip) for the whole episode.
    """
    known = " ".join(
        [*(value for _, value in spec.hidden_facts), *(str(value) for _, value in spec.variables), spec.goal]
    )
    problems = []
    heard = ""
    for role, content, role_flip in turns:
        if role == "assistant":
            heard += " " + content
            continue
        if role_flip:
            problems.append(f"spoke as the assistant: {content[:60]!r}")
        for token in FACT_TOKEN.findall(content):
            if token not in known and token not in heard:
                problems.append(f"stated a fact it was not given: {token}")
    return CheckResult(not problems, "; ".join(problems))
