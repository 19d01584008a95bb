"""The page in a real headless Chromium, against a store an optimizer is still writing to.

Needs Debian's chromium (`apt-get install chromium`) and Playwright for Python
(`pip install playwright`; its own browser download is not used). Skips only
when Chromium is not installed; without Playwright it fails, saying so. With DSPEX_UPDATE_SCREENSHOT=1 the
screenshot is also copied to docs/dashboard.png for the README.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dash_helpers import FakeSources, NoRuntime, add_trials, busy_runtime, event, seed_run

from dspex.dashboard.server import create_app, start
from dspex.dashboard.sources import RuntimeSources
from dspex.optimizers.run_store import RunStore

CHROMIUM = Path(os.environ.get("DSPEX_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
DEADLINE = 20.0

if not CHROMIUM.exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: `apt-get install chromium` to run the browser tests", allow_module_level=True)
try:
    from playwright import sync_api as playwright_api
except ImportError as exc:  # Chromium is here, so these tests are meant to run: say what is missing
    raise ImportError(
        "the browser tests need Playwright for Python: `pip install playwright` (no `playwright install`)"
    ) from exc

pytestmark = pytest.mark.slow


@dataclass
class LiveDashboard:
    url: str
    store: RunStore


class _ServerThread:
    """A dashboard served from its own thread and event loop, as `dspex dashboard` would."""

    def __init__(self, store: RunStore, sources: RuntimeSources) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dashboard-under-test", daemon=True)
        self.thread.start()
        app = create_app(store, sources=sources, poll_interval=0.1, runtime_interval=0.2)
        self.runner, self.url = self._run(start(app, "127.0.0.1", 0))

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def stop(self) -> None:
        self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    # A fresh context is a fresh profile: no cache or storage carried between tests.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.problems = []  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    yield page
    context.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[RuntimeSources], LiveDashboard]]:
    servers: list[_ServerThread] = []
    store = RunStore(tmp_path / "runs.sqlite3")

    def start_server(sources: RuntimeSources) -> LiveDashboard:
        server = _ServerThread(store, sources)
        servers.append(server)
        return LiveDashboard(server.url, RunStore(store.path))

    yield start_server
    for server in servers:
        server.stop()


def wait_for(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Polls ``check`` until it returns something truthy; fails with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {value!r})")
        time.sleep(0.05)  # a polling period, not synchronisation


def point_count(page: Any) -> int:
    return page.locator("#score-chart .pt").count()


def test_empty_store_tells_what_to_do(page: Any, serve: Callable[[RuntimeSources], LiveDashboard]) -> None:
    live = serve(NoRuntime())
    page.goto(live.url)
    runs = page.locator("#runs")
    runs.get_by_text("No runs yet").wait_for(timeout=DEADLINE * 1000)
    assert "dspex demo" in runs.inner_text()
    assert "Runtime not connected" in page.locator("#pools").inner_text()
    assert page.locator("#run-card").is_hidden()
    assert page.problems == []


def test_a_run_in_progress_updates_live(
    page: Any, serve: Callable[[RuntimeSources], LiveDashboard], tmp_path: Path
) -> None:
    sources = FakeSources(busy_runtime())
    live = serve(sources)
    store = live.store
    seed_run(store, "bootstrap-0412", [0.42, 0.51, 0.55], optimizer="BootstrapFewShot")
    store.update_run("bootstrap-0412", status="finished", best_score=0.55)
    seed_run(store, "mipro-7f3a", [0.48, 0.55, None, 0.61, 0.58, 0.66], config={"num_trials": 24, "auto": "light"})
    store.add_usage("mipro-7f3a", "openai/sim-arith", calls=1840, prompt_tokens=402000, completion_tokens=51000, cost=0.1932)
    store.update_run("mipro-7f3a", best_score=0.66)
    sources.pending_events = [
        event("child.restarted", "providers", child="pool:sim-arith", restarts=2),
        event("breaker.state", "dspex.pool.openai.flaky", old="closed", new="open"),
        event("eval.progress", "eval:mipro-7f3a/trial-6", done=37, total=100, errors=1),
        event("trial.scored", "run:mipro-7f3a", number=5, score=0.66),
    ]
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))

    page.goto(live.url)
    page.locator('#runs tr[data-run="mipro-7f3a"]').wait_for(timeout=DEADLINE * 1000)
    assert "running" in page.locator('#runs tr[data-run="mipro-7f3a"]').inner_text()
    # The running run is shown without a click: five scores and one failed trial.
    wait_for(lambda: point_count(page) == 6, "the six trials to be plotted")
    assert page.locator("#score-chart .pt.failed").count() == 1
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    add_trials(store, "mipro-7f3a", [0.63, 0.71, None, 0.69], first=6)  # the optimizer goes on
    store.add_usage("mipro-7f3a", "openai/sim-arith", calls=600, prompt_tokens=130000, completion_tokens=17000, cost=0.061)
    store.update_run("mipro-7f3a", best_score=0.71)

    wait_for(lambda: point_count(page) == 10, "the new trials to appear on the chart")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded instead of updating"
    assert page.locator("#score-chart .pt.failed").count() == 2
    wait_for(lambda: "2,440" in page.locator("#usage").inner_text(), "the usage table to add the new calls")
    assert "0.710" in page.locator("#run-stats").inner_text()
    assert "10 of 24 planned trials" in page.locator("#run-progress").inner_text()

    # The runtime panels, from the runtime's readings.
    assert "open" in page.locator("#pools").inner_text()
    assert "↻ 2" in page.locator("#tree").inner_text()
    assert "AdapterParseError" in page.locator("#dead-letters").inner_text()
    wait_for(lambda: "37 / 100" in page.locator("#evaluations").inner_text(), "the evaluation progress")
    assert "child.restarted" in page.locator("#events").inner_text()

    # Choosing another run swaps the chart; the choice survives further pushes.
    page.locator('#runs tr[data-run="bootstrap-0412"]').click()
    wait_for(lambda: point_count(page) == 3, "the other run's three trials")
    add_trials(store, "mipro-7f3a", [0.7], first=10)
    trials_cell = page.locator('#runs tr[data-run="mipro-7f3a"] td:nth-child(5)')
    wait_for(lambda: trials_cell.inner_text().startswith("11"), "the runs table to count the new trial")
    assert point_count(page) == 3

    page.locator('#runs tr[data-run="mipro-7f3a"]').click()
    wait_for(lambda: point_count(page) == 11, "the first run's chart again")
    screenshot = tmp_path / "dashboard.png"
    page.mouse.move(0, 0)
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("DSPEX_UPDATE_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, DOCS_SCREENSHOT)

    store.update_run("mipro-7f3a", status="finished")
    wait_for(lambda: "finished" in page.locator("#run-meta").inner_text(), "the status to change")

    page.locator("#score-chart .pt").nth(6).hover()
    wait_for(lambda: page.locator("#chart-tip").is_visible(), "the trial tooltip")
    assert "Trial 6" in page.locator("#chart-tip").inner_text()

    # Self-contained: the browser asked nothing of anyone but this server.
    assert requests and all(url.startswith((live.url, "data:")) for url in requests), requests
    assert page.problems == []
