"""The web viewer: every page over plain HTTP, then the real thing in Debian's Chromium.

One store for the module: a sim run of support-refund (4 episodes, every kind of review row)
and a run of a scenario file whose persona, goal and run id carry markup that must render as
text. The HTTP tests use their own copy through Starlette's TestClient; the browser tests
drive ``dramaturg serve`` as a real process, stopped by its PID.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest
from dramaturg.memory import Store, annotate, annotation_tags, pair_verdicts
from markupsafe import escape
from playwright.sync_api import Browser, Dialog, Page, expect, sync_playwright
from starlette.testclient import TestClient

import dramaturg
from dramaturg.viewer import (
    EXAMPLE_QUERIES,
    LOOPBACK_HOSTS,
    ThreadStoreAccess,
    _pairs,
    _runs,
    allowed_hosts_for,
    create_app,
)
from dramaturg.viewer._diff import word_diff
from dramaturg.viewer._sql import QueryRefused, check_read_only
from tests.conftest import REPO, query

RUN = "demo"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
XSS_RUN = f"{SCRIPT}{IMG}"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ORIGIN = "http://127.0.0.1"

XSS_SCENARIO = f'''
from dramaturg import Persona, Scenario, Stage, Transition

scenario = Scenario(
    name="bookshop",
    description="A reader asks a bookshop assistant for a recommendation.",
    assistant_prompt="You are the assistant of a small bookshop. Ask for a favourite author first.",
    personas=[
        Persona(
            name="{SCRIPT}",
            traits=["friendly"],
            goal="find a {{genre}} novel {IMG}",
            hidden_facts={{"favourite author": "{{author}}"}},
        )
    ],
    variables={{"genre": ["mystery", "science fiction"], "author": ["Agatha Christie", "Ursula K. Le Guin"]}},
    stages=[
        Stage(name="ask", instruction="Ask for a {{genre}} recommendation."),
        Stage(name="details", instruction="Give the details the assistant asks for."),
        Stage(name="close", instruction="Thank the assistant and say goodbye.", terminal=True),
    ],
    transitions=[Transition(source="ask", target="details"), Transition(source="details", target="close")],
    max_turns=4,
)
'''


@dataclass(frozen=True)
class Built:
    """The module's store, and episodes picked from it before any viewer holds the file."""

    path: Path
    episode: str  # of the demo run, with a revision, tool calls and checks
    planted: str  # of the run with planted markup


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("viewer")
    path = folder / "corpus.duckdb"
    scenario_file = folder / "xss_bookshop.py"
    scenario_file.write_text(XSS_SCENARIO)
    for config in (
        dramaturg.RunConfig(scenarios=["support-refund"], episodes=4, run_id=RUN),
        dramaturg.RunConfig(scenarios=[str(scenario_file)], episodes=2, run_id=XSS_RUN),
    ):
        asyncio.run(dramaturg.run(config, path))
    episode = query(
        path,
        "SELECT min(e.episode_id) FROM episodes e WHERE e.run_id = ? "
        "AND EXISTS (SELECT 1 FROM revisions r WHERE r.episode_id = e.episode_id) "
        "AND EXISTS (SELECT 1 FROM tool_calls t WHERE t.episode_id = e.episode_id)",
        [RUN],
    )[0][0]
    planted = query(
        path,
        "SELECT min(episode_id) FROM turns WHERE content LIKE ? AND episode_id IN "
        "(SELECT episode_id FROM episodes WHERE run_id = ?)",
        [f"%{IMG}%", XSS_RUN],
    )[0][0]
    assert episode and planted, "the sim run has a revised turn with tool calls; the sim user says its goal"
    return Built(path, episode, planted)


@dataclass
class Viewer:
    """The app in-process over a copy of the store; ``store`` is the app's own connection
    (DuckDB allows one configuration per file in a process), used between requests."""

    client: TestClient
    store: Store
    built: Built

    def one(self, sql: str, params: list[object] | None = None) -> object:
        return self.store.sql(sql, params or [])[0][0]


@pytest.fixture
def viewer(built: Built, tmp_path: Path) -> Iterator[Viewer]:
    copy = tmp_path / "corpus.duckdb"
    shutil.copy(built.path, copy)
    access = ThreadStoreAccess(Store.open(copy))
    try:
        with TestClient(create_app(access), base_url=ORIGIN) as client:
            yield Viewer(client, access.store, built)
    finally:
        access.close()


# -- every page over HTTP -------------------------------------------------------------------------


def test_runs_page_lists_both_runs_with_their_counts(viewer: Viewer) -> None:
    page = viewer.client.get("/")
    assert page.status_code == 200
    assert "/run?id=demo" in page.text
    assert escape(XSS_RUN) in page.text
    assert "support-refund" in page.text and "bookshop" in page.text


def test_run_page_shows_config_summary_and_filters_episodes(viewer: Viewer) -> None:
    page = viewer.client.get("/run", params={"id": RUN})
    assert page.status_code == 200
    for text in ("4 done, 0 failed", "model calls", "sim:sim", "&#34;scenarios&#34;", "support-refund #0"):
        assert text in page.text, text
    assert page.text.count('class="episode-link"') == 4
    failing = viewer.one(
        "SELECT count(DISTINCT c.episode_id) FROM checks c JOIN episodes e USING (episode_id) "
        "WHERE e.run_id = ? AND NOT c.passed",
        [RUN],
    )
    filtered = viewer.client.get("/run", params={"id": RUN, "check": "*"})
    assert filtered.text.count('class="episode-link"') == failing
    by_reason = viewer.client.get("/run", params={"id": RUN, "reason": "no-such-reason"})
    assert "No episode matches these filters." in by_reason.text
    assert viewer.client.get("/run", params={"id": "nope"}).status_code == 404


def test_episode_filters_for_flags_role_flips_and_tags(viewer: Viewer) -> None:
    episode = viewer.built.episode
    viewer.store.sql(
        "INSERT INTO filtered VALUES ('dialogue', ?, 'failed_check', ?, 'refund_within_policy')",
        [episode, RUN],
    )
    viewer.store.sql("UPDATE episodes SET role_flips = 1 WHERE episode_id = ?", [episode])
    annotate(viewer.store, "episode", episode, "tag", tag="needs a look")
    for params in (
        {"flagged": "*"},
        {"flagged": "failed_check"},
        {"role_flips": "1"},
        {"tag": "needs a look"},
    ):
        page = viewer.client.get("/run", params={"id": RUN, **params})
        assert page.text.count('class="episode-link"') == 1, params
        assert quote(episode, safe="") in page.text, params


def test_episodes_and_pairs_come_in_pages(viewer: Viewer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_runs, "EPISODES_PER_PAGE", 3)
    monkeypatch.setattr(_pairs, "PAIRS_PER_PAGE", 3)
    first = viewer.client.get("/run", params={"id": RUN})
    assert first.text.count('class="episode-link"') == 3 and "page 1 of 2" in first.text
    assert 'href="/run?page=2&amp;id=demo"' in first.text
    second = viewer.client.get("/run", params={"id": RUN, "page": "2"})
    assert second.text.count('class="episode-link"') == 1 and "← previous" in second.text
    beyond = viewer.client.get("/run", params={"id": RUN, "page": "99"})
    assert "page 2 of 2" in beyond.text
    pairs = int(viewer.one("SELECT count(*) FROM preference_pairs"))
    shown = [
        viewer.client.get("/pairs", params={"page": str(n)}).text.count('<article class="pair')
        for n in range(1, -(-pairs // 3) + 1)
    ]
    assert sum(shown) == pairs and shown[0] == 3


def test_episode_page_shows_the_whole_story_of_a_turn(viewer: Viewer) -> None:
    episode = viewer.built.episode
    page = viewer.client.get("/episode", params={"id": episode})
    assert page.status_code == 200
    text = page.text
    assert "critic on the original" in text and "critic on the revision" in text
    assert "<del>" in text or "<ins>" in text  # the revision as a word diff
    assert "judgments in both orders" in text and "<td>ab</td>" in text and "<td>ba</td>" in text
    check = str(viewer.one("SELECT min(name) FROM checks WHERE episode_id = ?", [episode]))
    assert f"<code>{check}</code>" in text and "checks: " in text
    tool = str(viewer.one("SELECT min(tool) FROM tool_calls WHERE episode_id = ?", [episode]))
    assert f"<code>{tool}</code>" in text
    assert "hidden facts" in text and "stage path" in text
    assert 'value="reject"' in text and 'value="accept"' in text and 'value="flip"' in text
    assert viewer.client.get("/episode", params={"id": "no/such/0"}).status_code == 404


def test_episode_page_shows_openings_and_turn_origins(viewer: Viewer) -> None:
    episode = viewer.built.episode
    viewer.store.sql(
        "INSERT INTO openings VALUES (?, 'evolved', 'q7', 'How do refunds work?', 'deepen', "
        "'How do refunds work for opened items?', true, NULL, '[]')",
        [episode],
    )
    viewer.store.sql("UPDATE turns SET origin = 'seed' WHERE episode_id = ? AND idx = 0", [episode])
    page = viewer.client.get("/episode", params={"id": episode})
    assert "How do refunds work for opened items?" in page.text and "deepen" in page.text
    assert '<span class="badge origin">seed</span>' in page.text


def test_pairs_page_shows_both_sides_with_provenance(viewer: Viewer) -> None:
    page = viewer.client.get("/pairs", params={"run": RUN})
    assert page.status_code == 200
    pairs = viewer.store.sql("SELECT pair_id, chosen, rejected FROM preference_pairs WHERE run_id = ?", [RUN])
    assert page.text.count('<article class="pair') == len(pairs) > 0
    for pair_id, chosen, rejected in pairs:
        assert f'id="pair-{pair_id}"' in page.text
        assert escape(chosen) in page.text and escape(rejected) in page.text
    assert 'chosen <span class="muted">· sim:sim</span>' in page.text
    assert "judges agree in both orders" in page.text and "margin <strong>" in page.text


def test_stats_page_reuses_the_report(viewer: Viewer) -> None:
    page = viewer.client.get("/stats", params={"run": RUN})
    assert page.status_code == 200
    assert page.text.count("<svg") >= 3  # critic scores, turn lengths, pair lengths, ...
    for title in ("Episodes", "Diversity", "Critique and verification", "Pairs", "Curation"):
        assert f"<h2>{title}</h2>" in page.text
    assert "curated now" in page.text
    assert viewer.client.get("/stats", params={"run": "nope"}).status_code == 404


def test_annotations_page_lists_the_history(viewer: Viewer) -> None:
    pair_id = str(viewer.one("SELECT min(pair_id) FROM preference_pairs"))
    annotate(viewer.store, "pair", pair_id, "flip", note="the original was right")
    page = viewer.client.get("/annotations")
    assert page.status_code == 200 and pair_id in page.text and "the original was right" in page.text
    one = viewer.client.get("/pairs", params={"pair": pair_id})
    assert one.text.count('<article class="pair') == 1 and "flipped" in one.text


def test_every_exported_name_exists_and_the_web_stack_loads_on_first_use() -> None:
    code = (
        "import sys, dramaturg.viewer as v; loaded = 'starlette' in sys.modules; "
        "assert all(getattr(v, name) is not None for name in v.__all__); print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", "importing the viewer package must not load Starlette"


def test_templates_and_styles_ship_with_the_package() -> None:
    package = importlib.resources.files("dramaturg.viewer")
    for name in (
        "base.html",
        "episode.html",
        "pairs.html",
        "run.html",
        "runs.html",
        "sql.html",
        "stats.html",
    ):
        assert (package / "templates" / name).is_file(), name
    assert (package / "static" / "viewer.css").is_file()


def test_pages_load_nothing_from_elsewhere_and_carry_no_script(viewer: Viewer) -> None:
    assert viewer.client.get("/static/viewer.css").headers["content-type"].startswith("text/css")
    for path in ("/", f"/run?id={RUN}", "/pairs", "/sql", "/stats", "/annotations"):
        page = viewer.client.get(path)
        assert not re.search(r"""(src|href|action)=["']?(https?:)?//""", page.text), path
        assert "<script" not in page.text.lower(), path
        assert "default-src 'none'" in page.headers["content-security-policy"], path
        assert page.headers["x-frame-options"] == "DENY"


# -- planted markup renders as text -----------------------------------------------------------------


def test_planted_markup_is_escaped_on_every_page(viewer: Viewer) -> None:
    planted = viewer.built.planted
    pages = {
        "runs": viewer.client.get("/"),
        "run": viewer.client.get("/run", params={"id": XSS_RUN}),
        "episode": viewer.client.get("/episode", params={"id": planted}),
        "pairs": viewer.client.get("/pairs", params={"run": XSS_RUN}),
        "stats": viewer.client.get("/stats", params={"run": XSS_RUN}),
        "sql": viewer.client.get("/sql", params={"q": "SELECT run_id, persona, spec FROM episodes"}),
        "annotations": viewer.client.get("/annotations"),
    }
    annotate(viewer.store, "episode", planted, "tag", tag=SCRIPT, note=IMG)
    pages["tagged"] = viewer.client.get("/episode", params={"id": planted})
    pages["annotations"] = viewer.client.get("/annotations")
    for name, page in pages.items():
        assert page.status_code == 200, name
        lowered = page.text.lower()
        assert "<script>alert" not in lowered and "<img src=x" not in lowered, name
        assert escape(SCRIPT) in page.text, name
    assert escape(IMG) in pages["episode"].text  # the goal, in the spec and in a turn
    assert escape(XSS_RUN) in pages["episode"].text  # the run id, in the crumbs and the episode id
    assert "&lt;script&gt;" in pages["stats"].text  # the persona's name in the coverage heatmap


# -- the SQL page ----------------------------------------------------------------------------------


REFUSED = {
    "DELETE FROM preference_pairs": "DELETE",
    "DROP TABLE runs": "DROP",
    "INSERT INTO annotations (kind, item_id, action, created_at) SELECT 'pair', 'x', 'flip', now()": "INSERT",
    "UPDATE episodes SET status = 'failed'": "UPDATE",
    "COPY (SELECT * FROM turns) TO '/tmp/dramaturg-viewer-stolen.csv'": "COPY",
    "COPY runs FROM '/tmp/dramaturg-viewer-none.csv'": "COPY",
    "ATTACH '/tmp/dramaturg-viewer-other.duckdb' AS other": "ATTACH",
    "PRAGMA database_list": "PRAGMA",
    "SET threads = 1": "SET",
    "CREATE TABLE x AS SELECT 1": "CREATE",
    "INSTALL httpfs": "LOAD",
    "CALL pragma_version()": "CALL",
}


@pytest.mark.parametrize("statement", list(REFUSED))
def test_sql_page_refuses_writes(viewer: Viewer, statement: str) -> None:
    before = viewer.one("SELECT count(*) FROM preference_pairs")
    page = viewer.client.get("/sql", params={"q": statement})
    assert page.status_code == 400
    assert f"refused: a {REFUSED[statement]} statement" in page.text
    assert viewer.one("SELECT count(*) FROM preference_pairs") == before
    assert viewer.one("SELECT count(*) FROM runs") == 2
    assert not Path("/tmp/dramaturg-viewer-stolen.csv").exists()
    assert not Path("/tmp/dramaturg-viewer-other.duckdb").exists()


def test_sql_page_refuses_several_statements_and_a_write_hidden_in_a_select(viewer: Viewer) -> None:
    before = viewer.one("SELECT count(*) FROM preference_pairs")
    page = viewer.client.get("/sql", params={"q": "SELECT 1; DELETE FROM preference_pairs"})
    assert page.status_code == 400 and "2 statements" in page.text
    # DuckDB parses a data-modifying CTE as a SELECT: the read-only transaction refuses it.
    hidden = "WITH d AS (DELETE FROM preference_pairs RETURNING *) SELECT * FROM d"
    page = viewer.client.get("/sql", params={"q": hidden})
    assert page.status_code == 400 and "read-only mode" in page.text
    assert viewer.one("SELECT count(*) FROM preference_pairs") == before > 0


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) AS n FROM episodes",
        "WITH e AS (SELECT * FROM episodes) SELECT count(*) FROM e",
        "FROM runs SELECT run_id",
        "DESCRIBE preference_pairs",
        "SUMMARIZE episodes",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM turns",
        "SELECT * FROM pair_verdicts;",
    ],
)
def test_sql_page_runs_read_only_queries(viewer: Viewer, statement: str) -> None:
    page = viewer.client.get("/sql", params={"q": statement})
    assert page.status_code == 200, page.text
    assert 'class="grid compact sql-result"' in page.text


def test_sql_page_shows_the_first_rows_of_a_large_result(viewer: Viewer) -> None:
    page = viewer.client.get("/sql", params={"q": "SELECT * FROM range(100000) t(n) ORDER BY n DESC"})
    assert "500 rows (the first 500" in page.text
    assert (
        "<td>99999</td>" in page.text and "<td>99500</td>" in page.text and "<td>99499</td>" not in page.text
    )


def test_each_example_query_runs_and_is_in_the_readme(viewer: Viewer) -> None:
    readme = (REPO / "README.md").read_text()
    for number, example in enumerate(EXAMPLE_QUERIES):
        assert example.sql in readme, f"example {number} ({example.title}) is not in README.md verbatim"
        page = viewer.client.get("/sql", params={"example": number})
        assert page.status_code == 200, page.text
        assert escape(example.sql.splitlines()[0]) in page.text
        assert 'class="grid compact sql-result"' in page.text
    assert 'href="/sql?example=0"' in viewer.client.get("/sql").text


def test_check_read_only_names_what_it_refused() -> None:
    assert check_read_only("  SELECT 1 ;  ") == "SELECT 1"
    with pytest.raises(QueryRefused, match="no statement"):
        check_read_only("-- nothing")
    with pytest.raises(duckdb.ParserException):
        check_read_only("SELEC 1")


# -- annotations -----------------------------------------------------------------------------------


def test_annotating_a_pair_needs_a_same_origin_post(viewer: Viewer) -> None:
    pair_id = str(viewer.one("SELECT min(pair_id) FROM preference_pairs"))
    form = {
        "kind": "pair",
        "item_id": pair_id,
        "action": "reject",
        "note": "promises a refund",
        "next": "/pairs",
    }
    assert viewer.client.post("/annotate", data=form).status_code == 403  # no Origin
    foreign = viewer.client.post("/annotate", data=form, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    assert viewer.one("SELECT count(*) FROM annotations") == 0
    done = viewer.client.post("/annotate", data=form, headers={"Origin": ORIGIN}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/pairs"
    assert viewer.store.sql("SELECT kind, item_id, action, note FROM annotations") == [
        ("pair", pair_id, "reject", "promises a refund")
    ]
    page = viewer.client.get("/pairs", params={"verdict": "reject"})
    assert page.text.count('<article class="pair') == 1 and "rejected" in page.text
    assert viewer.client.get("/pairs", params={"verdict": "none"}).text.count('<article class="pair') == (
        viewer.one("SELECT count(*) FROM preference_pairs") - 1
    )


def test_annotate_refuses_bad_input_and_foreign_redirects(viewer: Viewer) -> None:
    pair_id = str(viewer.one("SELECT min(pair_id) FROM preference_pairs"))
    episode = viewer.built.episode
    headers = {"Origin": ORIGIN}
    bad = [
        {"kind": "pair", "item_id": pair_id, "action": "delete"},
        {"kind": "nothing", "item_id": pair_id, "action": "accept"},
        {"kind": "episode", "item_id": episode, "action": "reject"},
        {"kind": "pair", "item_id": "no-such-pair", "action": "accept"},
        {"kind": "episode", "item_id": episode, "action": "tag", "tag": ""},
        {"kind": "episode", "item_id": episode, "action": "tag", "tag": "x" * 65},
    ]
    for form in bad:
        assert viewer.client.post("/annotate", data=form, headers=headers).status_code == 400, form
    assert viewer.one("SELECT count(*) FROM annotations") == 0
    tagged = viewer.client.post(
        "/annotate",
        data={
            "kind": "episode",
            "item_id": episode,
            "action": "tag",
            "tag": "good",
            "next": "//evil.example/x",
        },
        headers=headers,
        follow_redirects=False,
    )
    assert tagged.status_code == 303 and tagged.headers["location"] == "/annotations"
    assert '<span class="badge tag">good</span>' in viewer.client.get("/episode", params={"id": episode}).text


def test_requests_naming_another_host_are_refused(viewer: Viewer) -> None:
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 still sends its own name as Host.
    assert viewer.client.get("/", headers={"Host": "evil.example"}).status_code == 403
    assert viewer.client.get("/", headers={"Host": "localhost:8765"}).status_code == 200
    assert allowed_hosts_for("127.0.0.1") == LOOPBACK_HOSTS
    assert allowed_hosts_for("0.0.0.0") is None
    assert "192.168.1.5" in (allowed_hosts_for("192.168.1.5") or ())


def test_the_latest_verdict_wins_and_history_is_kept(viewer: Viewer) -> None:
    store = viewer.store
    first, second = (row[0] for row in store.sql("SELECT pair_id FROM preference_pairs ORDER BY 1 LIMIT 2"))
    annotate(store, "pair", first, "accept")
    annotate(store, "pair", first, "reject")
    annotate(store, "pair", second, "flip")
    annotate(store, "pair", second, "clear")
    assert pair_verdicts(store) == {first: "reject"}
    run_of_first = viewer.one("SELECT run_id FROM preference_pairs WHERE pair_id = ?", [first])
    assert pair_verdicts(store, str(run_of_first)) == {first: "reject"}
    assert pair_verdicts(store, "no-such-run") == {}
    annotate(store, "pair", first, "tag", tag=" too   long ")
    annotate(store, "pair", first, "untag", tag="too long")
    annotate(store, "pair", first, "tag", tag="verbose")
    assert annotation_tags(store, "pair") == {first: ["verbose"]}
    assert store.sql("SELECT count(*) FROM annotations")[0][0] == 7


def test_the_schema_refuses_verdicts_on_episodes(viewer: Viewer) -> None:
    with pytest.raises(duckdb.ConstraintException):
        viewer.store.sql(
            "INSERT INTO annotations (kind, item_id, action, created_at) "
            "VALUES ('episode', 'e', 'accept', now())"
        )


# -- pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("original", "revised"),
    [
        ("a b c", "a x c"),
        ("Hello there.\nI can promise a refund.  Bye", "Hello there.\nBye"),
        ("", "all new"),
        ("all gone", ""),
        ("same", "same"),
    ],
)
def test_word_diff_gives_back_both_texts(original: str, revised: str) -> None:
    segments = word_diff(original, revised)
    assert "".join(s.text for s in segments if s.op != "added") == original
    assert "".join(s.text for s in segments if s.op != "removed") == revised


def test_serve_refuses_a_store_that_does_not_exist(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dramaturg", "serve", "--db", str(tmp_path / "none.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "no such store" in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


# -- in a real browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dramaturg serve`` on a free port of 127.0.0.1, over the module's store; its URL."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dramaturg", "serve", "--db", str(built.path), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield _wait_for_url(log, process).rstrip("/")
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, f"SIGTERM stops the viewer cleanly; it exited with {code}: {log.read_text()}"
    assert not Path(f"{built.path}.serving").exists(), "the viewer removes its marker when it stops"


def _wait_for_url(log: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:\d+/", log.read_text())
        if found:
            return found.group(0)
        if process.poll() is not None:
            raise AssertionError(f"the viewer exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"the viewer did not announce its URL within 30 s: {log.read_text()}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the viewer's browser tests drive Debian's Chromium. Install it with "
            "`apt-get install -y chromium` (.ci/run does); Playwright never downloads a browser here."
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Tab:
    page: Page
    dialogs: list[str]  # every alert, confirm or prompt the page opened: planted markup that ran


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        yield Tab(page, dialogs)
    finally:
        context.close()


def test_browser_opens_a_run_then_an_episode_with_its_review(
    server: str, tab: Tab, built: Built, tmp_path: Path
) -> None:
    page = tab.page
    page.goto(server + "/")
    page.get_by_role("link", name=RUN, exact=True).click()
    expect(page.locator("h1")).to_contain_text(RUN)
    expect(page.locator("a.episode-link")).to_have_count(4)
    page.locator(f'a.episode-link[href="/episode?id={quote(built.episode, safe="")}"]').click()
    expect(page.locator("h1")).to_contain_text(built.episode)
    expect(page.locator(".critique").first).to_be_visible()
    expect(page.locator(".diff del, .diff ins").first).to_be_visible()
    expect(page.locator(".checks").first).to_contain_text("checks: ")
    expect(page.locator("table.tools").first).to_be_visible()
    expect(page.locator(".judgments").first).to_contain_text("revision")
    # Tag the episode: the page comes back with the tag.
    page.get_by_label("new tag").fill("good example")
    page.get_by_role("button", name="Tag", exact=True).click()
    expect(page.locator(".tags .badge.tag")).to_have_text("good example")
    # DRAMATURG_VIEWER_SCREENSHOT=docs/viewer-episode.png refreshes the README's picture.
    shot = Path(os.environ.get("DRAMATURG_VIEWER_SCREENSHOT", tmp_path / "episode.png"))
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert tab.dialogs == []


def test_browser_rejects_a_pair_and_the_store_holds_it(server: str, tab: Tab) -> None:
    page = tab.page
    page.goto(f"{server}/pairs?run={RUN}")
    card = page.locator("article.pair").first
    pair_id = str(card.get_attribute("id")).removeprefix("pair-")
    card.get_by_label("note").fill("promises a refund before the order is verified")
    card.get_by_role("button", name="Reject").click()
    rejected = page.locator(f"#pair-{pair_id}")
    expect(rejected.locator(".verdict")).to_contain_text("rejected")
    expect(rejected).to_have_class(re.compile("verdict-reject"))
    # The store holds it: asked through the viewer's own SQL page, since the viewer holds the file.
    page.goto(server + "/sql")
    page.get_by_label("query").fill("SELECT item_id, action, note FROM annotations WHERE kind = 'pair'")
    page.get_by_role("button", name="Run").click()
    row = page.locator("table.sql-result tbody tr").filter(has_text=pair_id)
    expect(row).to_have_count(1)
    expect(row).to_contain_text("reject")
    expect(row).to_contain_text("promises a refund before the order is verified")
    assert tab.dialogs == []


def test_browser_shows_planted_markup_as_text_and_runs_none_of_it(
    server: str, tab: Tab, built: Built
) -> None:
    page = tab.page
    page.goto(server + "/")
    planted_run = page.get_by_role("link", name=XSS_RUN, exact=True)
    expect(planted_run).to_be_visible()
    planted_run.click()
    expect(page.locator("h1")).to_contain_text(XSS_RUN)
    expect(page.get_by_role("cell", name=SCRIPT, exact=True).first).to_be_visible()
    page.goto(f"{server}/episode?id={quote(built.planted, safe='')}")
    expect(page.locator(".spec-persona")).to_have_text(SCRIPT)
    expect(page.locator(".spec-goal")).to_contain_text(IMG)
    expect(page.locator(".turn-text").filter(has_text=IMG).first).to_be_visible()
    for path in (
        "/",
        f"/run?id={quote(XSS_RUN, safe='')}",
        f"/episode?id={quote(built.planted, safe='')}",
        f"/pairs?run={quote(XSS_RUN, safe='')}",
        f"/stats?run={quote(XSS_RUN, safe='')}",
    ):
        page.goto(server + path)
        expect(page.locator("main")).to_contain_text(SCRIPT)
        assert page.locator("script").count() == 0, path
        assert page.locator("main img").count() == 0, path
    assert tab.dialogs == []


def test_browser_sql_page_refuses_a_delete(server: str, tab: Tab) -> None:
    page = tab.page
    page.goto(server + "/sql")
    page.get_by_role("link", name=EXAMPLE_QUERIES[0].title).click()
    expect(page.locator("table.sql-result")).to_be_visible()
    page.get_by_label("query").fill("DELETE FROM preference_pairs")
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".sql-error")).to_contain_text("refused: a DELETE statement")
    page.get_by_label("query").fill("SELECT count(*) AS pairs FROM preference_pairs")
    page.get_by_role("button", name="Run").click()
    assert int(page.locator("table.sql-result tbody td").first.inner_text()) > 0
