"""Pages in a real browser: Debian's Chromium driven by Playwright, against `arkhiv serve` run
as its own process (uvicorn, the embedded worker running ingest and the other jobs).
Screenshots of every page visited go to tests/artifacts/ (not committed)."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from arkhiv.access.accounts import set_password
from arkhiv.access.viewers import create_user
from arkhiv.catalog.database import writing
from tests.conftest import REPO, arkhiv_command, require, subprocess_env
from tests.test_web import free_port, wait_until_healthy

ARTIFACTS = REPO / "tests" / "artifacts"
PASSWORD = "a long enough password"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).exists() else None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    require("chromium", None if path else "Debian's chromium is not installed (apt chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path,
            # WebGL without a GPU: Chromium's software rasterizer.
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"],
        )
        yield launched
        launched.close()


@dataclass
class Server:
    base: str
    process: subprocess.Popen
    errors: Path


@pytest.fixture
def server(archive, env, tmp_path) -> Iterator[Server]:
    """`arkhiv serve` on a free port, on the test's archive, with the ClamAV test database."""
    port = free_port()
    errors = tmp_path / "serve.err"
    process = subprocess.Popen(
        arkhiv_command("serve", "--port", str(port)),
        env=subprocess_env({**env, "ARKHIV_WEB__MAP_TILES_URL": ""}),  # no tiles offline
        stdout=subprocess.DEVNULL,
        stderr=errors.open("w"),
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_healthy(base, process, errors, 60)
    try:
        yield Server(base, process, errors)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def user(archive, name: str, role: str) -> str:
    with writing(archive.engine) as conn:
        create_user(conn, archive.settings.access, name, role)
        set_password(conn, name, PASSWORD, actor="tests")
    return name


def new_page(browser, viewport=DESKTOP, **options):
    context = browser.new_context(
        viewport=viewport,
        is_mobile=viewport["width"] < 500,
        has_touch=viewport["width"] < 500,
        locale="en-GB",
        **options,
    )
    page = context.new_page()
    page.set_default_timeout(60_000)
    # Script errors and refusals (CSP, failed loads) are kept for the tests to look at.
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"error: {error}"))
    page.on(
        "console",
        lambda message: (
            page.problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    return page


def sign_in(page, server: Server, name: str, then: str = "/") -> None:
    page.goto(f"{server.base}/signin?next={then}")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(server.base + then) + "$"))


def screenshot(page, name: str, **options) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True, **options)
    return path


def fits_the_screen(page) -> bool:
    """Nothing wider than the viewport: no sideways scrolling on a phone."""
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
