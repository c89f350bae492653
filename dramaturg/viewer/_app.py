"""The viewer as a Starlette app: server-rendered pages over a :class:`StoreAccess`.

Every piece of model or scenario text reaches the page through Jinja2 with autoescape on;
the only markup not written by a template is the report's inline SVG, whose text
``dramaturg._report`` escapes itself. The pages carry no script at all, and the
Content-Security-Policy says so, so a tag that slipped through would still not run.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import duckdb
import jinja2
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dramaturg._errors import DramaturgError, UserError
from dramaturg._report import _figures
from dramaturg._stats import StatsTable, stats_tables
from dramaturg.evaluators import ensure_curated, read_metrics
from dramaturg.memory import AnnotationAction, AnnotationKind, Store, annotate, annotation_history
from dramaturg.viewer._access import StoreAccess
from dramaturg.viewer._episode import episode_page
from dramaturg.viewer._pairs import PairFilters, pair_list
from dramaturg.viewer._runs import EpisodeFilters, episode_list, run_page, run_summaries
from dramaturg.viewer._sql import EXAMPLE_QUERIES, MAX_ROWS, QueryRefused, QueryResult, run_read_only

__all__ = ["LOOPBACK_HOSTS", "allowed_hosts_for", "create_app"]

# The Host names a browser on this machine uses for a server bound to loopback. Any other Host
# on such a server means a page elsewhere is reaching it through DNS rebinding: refused.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SECURITY_HEADERS = {
    # No script, no frames, no foreign styles or forms: the pages need none of them.
    "content-security-policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def create_app(
    access: StoreAccess,
    *,
    allowed_hosts: Collection[str] | None = LOOPBACK_HOSTS,
    curate_stats: bool = True,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The viewer over ``access``.

    Args:
        access: Where the store is (see :class:`~dramaturg.viewer.StoreAccess`).
        allowed_hosts: Host header names accepted (without port); None accepts any, for a
            server bound to a non-loopback address on purpose.
        curate_stats: Curate a run whose metrics are stale when its stats page opens, as
            ``dramaturg stats`` does. A live run passes False: curating a run that is still
            writing would hold its writer for the whole curation.
        extra_routes: pages of the process serving the app (a live run's progress page).

    Example:
        >>> app = create_app(ThreadStoreAccess(Store.open("corpus.duckdb")))   # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8765)                       # doctest: +SKIP
    """
    pages = _Pages(access, _templates(), curate_stats)
    routes = [
        *extra_routes,
        Route("/", pages.runs),
        Route("/run", pages.run),
        Route("/episode", pages.episode),
        Route("/pairs", pages.pairs),
        Route("/stats", pages.stats),
        Route("/sql", pages.sql),
        Route("/annotations", pages.annotations),
        Route("/annotate", pages.annotate, methods=["POST"]),
        Route("/favicon.ico", _no_icon),
        Mount("/static", StaticFiles(packages=[("dramaturg.viewer", "static")]), name="static"),
    ]
    app = Starlette(routes=routes)
    app.add_middleware(_Guard, allowed_hosts=frozenset(allowed_hosts) if allowed_hosts is not None else None)
    return app


def _templates() -> Jinja2Templates:
    # autoescape=True for every template, whatever its file name: model text is untrusted.
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dramaturg.viewer", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the test, not the reader
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, cost=_cost, when=_when, score=_score, yesno=_yesno)
    return Jinja2Templates(env=env)


def _num(value: float | int | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _cost(value: float | None) -> str:
    return "–" if value is None else f"${value:,.4f}"


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _yesno(value: bool | None, yes: str = "yes", no: str = "no", unknown: str = "not judged") -> str:
    return unknown if value is None else yes if value else no


def _page(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


@dataclass(frozen=True, slots=True)
class _Figure:
    svg: Markup
    caption: str


class _Pages:
    """The route handlers; each reads what it shows in one call on the store's thread."""

    def __init__(self, access: StoreAccess, templates: Jinja2Templates, curate_stats: bool):
        self.access = access
        self.templates = templates
        self.curate_stats = curate_stats

    def render(self, request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def missing(self, request: Request, what: str) -> Response:
        return self.render(request, "error.html", 404, title="Not found", message=what)

    async def runs(self, request: Request) -> Response:
        runs = await self.access.call(run_summaries)
        return self.render(request, "runs.html", runs=runs)

    async def run(self, request: Request) -> Response:
        run_id = request.query_params.get("id", "")
        q = request.query_params
        filters = EpisodeFilters(
            scenario=q.get("scenario", ""),
            status=q.get("status", ""),
            reason=q.get("reason", ""),
            check=q.get("check", ""),
            flagged=q.get("flagged", ""),
            role_flips=q.get("role_flips", "") == "1",
            tag=q.get("tag", ""),
            page=_page(request),
        )

        def read(store: Store) -> tuple[Any, Any]:
            page = run_page(store, run_id)
            return page, episode_list(store, run_id, filters) if page else None

        page, episodes = await self.access.call(read)
        if page is None:
            return self.missing(request, f"no run {run_id!r} in this store")
        return self.render(request, "run.html", page=page, episodes=episodes, filters=filters, run_id=run_id)

    async def episode(self, request: Request) -> Response:
        episode_id = request.query_params.get("id", "")
        page = await self.access.call(lambda store: episode_page(store, episode_id))
        if page is None:
            return self.missing(request, f"no episode {episode_id!r} in this store")
        return self.render(request, "episode.html", page=page, back=_here(request))

    async def pairs(self, request: Request) -> Response:
        q = request.query_params
        filters = PairFilters(
            run=q.get("run", ""),
            scenario=q.get("scenario", ""),
            source=q.get("source", ""),
            verdict=q.get("verdict", ""),
            episode=q.get("episode", ""),
            pair=q.get("pair", ""),
            page=_page(request),
        )
        pairs = await self.access.call(lambda store: pair_list(store, filters))
        return self.render(request, "pairs.html", pairs=pairs, filters=filters, back=_here(request))

    async def stats(self, request: Request) -> Response:
        wanted = request.query_params.get("run", "")
        curate = self.curate_stats

        def read(store: Store) -> tuple[list[str], str, list[StatsTable], list[_Figure], str]:
            runs = [run_id for (run_id,) in store.sql("SELECT run_id FROM runs ORDER BY created_at DESC")]
            run_id = wanted or (runs[0] if runs else "")
            if run_id not in runs:
                return runs, run_id, [], [], ""
            note = ""
            if curate:
                result = ensure_curated(store, run_id)
                note = f"curated now in {result.elapsed_s:.1f} s" if result else ""
            metrics = read_metrics(store, run_id)
            if not metrics.metrics:
                return runs, run_id, [], [], "not curated yet: run `dramaturg stats` when the run is over"
            # _report draws each SVG from numbers and escapes every label it writes (its _e), so
            # the figure is markup the report made, not model text: marking it safe is sound.
            figures = [_Figure(Markup(svg), caption) for svg, caption in _figures(store, run_id, metrics)]
            return runs, run_id, stats_tables(metrics), figures, note

        runs, run_id, tables, figures, note = await self.access.call(read)
        if run_id and run_id not in runs:
            return self.missing(request, f"no run {run_id!r} in this store")
        return self.render(
            request, "stats.html", runs=runs, run_id=run_id, tables=tables, figures=figures, note=note
        )

    async def sql(self, request: Request) -> Response:
        query = request.query_params.get("q", "")
        example = request.query_params.get("example", "")
        if example.isdigit() and int(example) < len(EXAMPLE_QUERIES):
            query = EXAMPLE_QUERIES[int(example)].sql
        result: QueryResult | None = None
        error = ""
        if query.strip():
            try:
                result = await self.access.call(lambda store: run_read_only(store, query))
            except QueryRefused as exc:
                error = str(exc)
            except duckdb.Error as exc:
                error = f"{type(exc).__name__}: {exc}"

        def tables(store: Store) -> list[tuple[str, str]]:
            return [
                (str(name), str(kind))
                for name, kind in store.sql(
                    "SELECT table_name, table_type FROM information_schema.tables "
                    "WHERE table_schema = 'main' ORDER BY table_name"
                )
            ]

        return self.render(
            request,
            "sql.html",
            status_code=400 if error else 200,
            query=query,
            result=result,
            error=error,
            examples=EXAMPLE_QUERIES,
            tables=await self.access.call(tables),
            max_rows=MAX_ROWS,
        )

    async def annotations(self, request: Request) -> Response:
        history = await self.access.call(lambda store: annotation_history(store, limit=500))
        return self.render(request, "annotations.html", history=history)

    async def annotate(self, request: Request) -> Response:
        form = await _url_encoded_form(request)
        if form is None:
            return self.render(
                request, "error.html", 400, title="Not annotated", message="expected a form of at most 64 KiB"
            )
        kind, item_id, action = (form.get(k, "") for k in ("kind", "item_id", "action"))
        tag, note = form.get("tag", ""), form.get("note", "")
        back = _local(form.get("next", ""))
        # annotate() checks kind and action against their closed sets and names a wrong one.
        checked_kind, checked_action = cast(AnnotationKind, kind), cast(AnnotationAction, action)
        try:
            await self.access.call(
                lambda store: annotate(
                    store, checked_kind, item_id, checked_action, tag=tag or None, note=note or None
                )
            )
        except UserError as exc:
            return self.render(request, "error.html", 400, title="Not annotated", message=str(exc))
        except DramaturgError as exc:
            return self.render(request, "error.html", 500, title="Not annotated", message=str(exc))
        # 303: the browser follows with a GET, so reloading the page does not annotate twice.
        return RedirectResponse(back or "/annotations", status_code=303)


_MAX_FORM_BYTES = 64 * 1024


async def _url_encoded_form(request: Request) -> dict[str, str] | None:
    """The fields of a plain HTML form post, or None for anything else or anything larger.

    Parsed here rather than by Starlette, whose form parsing needs python-multipart: the
    viewer's forms are small and never upload files.
    """
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return None


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)  # browsers ask for one; an empty answer beats a logged 404


def _here(request: Request) -> str:
    """The path and query of ``request``, for a form to come back to."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def _local(url: str) -> str:
    """``url`` if it is a path on this server, else "" (a form's ``next`` must not leave it)."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not url.startswith("/") or url.startswith("//") or "\\" in url:
        return ""
    return url


class _Guard:
    """Refuse requests from elsewhere, and send the security headers.

    - Host must be one of ``allowed_hosts`` (DNS rebinding).
    - A state-changing request (POST) must carry an Origin naming this server: browsers send
      it on every cross-site POST, so a form on another site cannot annotate (CSRF).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: frozenset[str] | None):
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        refusal = self._refusal(scope["method"], host, headers.get("origin"))
        if refusal:
            await PlainTextResponse(refusal, status_code=403, headers=_SECURITY_HEADERS)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    extra.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, method: str, host: str, origin: str | None) -> str:
        if self.allowed_hosts is not None and _hostname(host) not in self.allowed_hosts:
            allowed = ", ".join(sorted(self.allowed_hosts))
            return f"refused: Host {host!r} is not this server's (allowed: {allowed})"
        if method not in _SAFE_METHODS:
            if not origin or origin == "null":
                return "refused: a change must come from a page of this viewer (no Origin header)"
            if urlsplit(origin).netloc.lower() != host.lower():
                return f"refused: a change must come from a page of this viewer, not {origin}"
        return ""


def _hostname(host: str) -> str:
    """The name part of a Host header: ``127.0.0.1:8765`` -> ``127.0.0.1``, ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_hosts_for(bind: str) -> frozenset[str] | None:
    """The Host names to accept for a server bound to ``bind``: the loopback names for a
    loopback address; plus the address itself for another one; any for a wildcard bind."""
    try:
        address = ipaddress.ip_address(bind.strip("[]"))
    except ValueError:  # a name such as localhost or myhost.lan
        return LOOPBACK_HOSTS | {bind.lower()}
    if address.is_unspecified:
        return None
    if address.is_loopback:
        return LOOPBACK_HOSTS
    return LOOPBACK_HOSTS | {f"[{address}]" if address.version == 6 else str(address)}
