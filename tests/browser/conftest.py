"""Browser tests: one Herald node (a `herald serve` process) and one headless Chromium per session.

Chromium is Debian's (`apt-get install chromium`, scripts/install-test-deps.sh), driven by
Playwright's Python package through `executable_path`: Playwright's own browser downloads
are never used. The tests are plain (sync) functions: Playwright's sync API runs its own
loop, apart from pytest-trio's. Screenshots go to ARTIFACTS (.artifacts/browser/ at the
checkout's root, or $HERALD_ARTIFACTS/browser), named in the run's summary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.process import HERALD, ROOT

CHROMIUM = os.environ.get("HERALD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("HERALD_ARTIFACTS", ROOT / ".artifacts")) / "browser"
ADMIN_KEY = "browser-admin-key"  # the node's bootstrap key (every scope)
# The sandbox SMS breaker opens after 2 failures and stays open 3 s; one attempt per delivery: a failure is a dead letter.
NODE_ENV = {
    "HERALD_API_KEY": ADMIN_KEY,
    "HERALD_LOG_LEVEL": "WARNING",
    "HERALD_MAX_ATTEMPTS": "1",
    "HERALD_RETRY_INITIAL_S": "0.05",
    "HERALD_LIMITS": "sms.failure_threshold=2,sms.open_timeout_s=3,sms.success_threshold=1",
}


@dataclass
class Node:
    url: str
    process: subprocess.Popen[bytes]

    def client(self, key: str = ADMIN_KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def wait_for(check: Any, seconds: float = 10, what: str = "condition") -> Any:
    """Poll `check()` until it returns something truthy (bounded); that value."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="package")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data = tmp_path_factory.mktemp("browser-node")
    log = data / "output.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(NODE_ENV, PYTHONPATH=str(ROOT))
    with log.open("wb") as out:
        process = subprocess.Popen([*HERALD, "serve", "--port", "0", "--data-dir", str(data / "data")],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        def served() -> str | None:
            match = re.search(r"herald: serving on (\S+)", log.read_text(errors="replace"))
            if process.poll() is not None:
                raise AssertionError("herald serve ended:\n" + log.read_text(errors="replace"))
            return match.group(1) if match else None

        url = wait_for(served, 30, "herald serve to listen")
        yield Node(url, process)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: scripts/install-test-deps.sh installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser context (its own session storage) per test; the console's messages kept for failures."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 900})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


def screenshot(page: Any, name: str) -> Path:
    """Save the page as ARTIFACTS/<name>.png (a test artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    shots = sorted(ARTIFACTS.glob("*.png")) if ARTIFACTS.exists() else []
    if shots:
        terminalreporter.write_line(f"browser screenshots: {len(shots)} in {ARTIFACTS}")
