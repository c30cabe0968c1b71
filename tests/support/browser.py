"""Headless Chromium for tests: Debian's ``chromium`` driven through ``chromedriver`` with a
minimal W3C WebDriver client over httpx (no browser-automation dependency). Screenshots go
to ``artifacts/screenshots/`` (the test artefacts people look at)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx
import pytest

from .net import free_port
from .wait import wait_for

SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # W3C WebDriver element key


class WebDriver:
    def __init__(self, chromium: str, driver: str) -> None:
        port = free_port()
        self.profile = tempfile.mkdtemp(prefix="kameng-chromium-")
        self.proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        wait_for(self._driver_ready, timeout=20)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                f"--user-data-dir={self.profile}", "--window-size=1280,900",
            ]},
        }}}
        r = self.http.post("/session", json=caps)
        assert r.status_code == 200, r.text
        self.sid = r.json()["value"]["sessionId"]

    def _driver_ready(self) -> bool:
        try:
            return self.http.get("/status").json()["value"]["ready"]
        except (httpx.HTTPError, KeyError, ValueError):
            return False

    def _cmd(self, method: str, path: str, body: dict | None = None):
        r = self.http.request(method, f"/session/{self.sid}{path}", json=body)
        assert r.status_code == 200, f"{method} {path}: {r.text[:300]}"
        return r.json()["value"]

    def get(self, url: str) -> None:
        self._cmd("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return self._cmd("GET", "/url")

    def find(self, css: str) -> str:
        value = self._cmd("POST", "/element", {"using": "css selector", "value": css})
        assert ELEMENT in value, f"{css}: {value}"
        return value[ELEMENT]

    def exists(self, css: str) -> bool:
        return bool(self._cmd("POST", "/elements", {"using": "css selector", "value": css}))

    def text(self, css: str) -> str:
        return self._cmd("GET", f"/element/{self.find(css)}/text")

    def type(self, css: str, text: str) -> None:
        self._cmd("POST", f"/element/{self.find(css)}/value", {"text": text})

    def click(self, css: str) -> None:
        self._cmd("POST", f"/element/{self.find(css)}/click", {})

    def login(self, base: str, email: str, password: str) -> None:
        """Log into a back office (HQ's or a shop's) through its login form."""
        self.get(f"{base}/admin/login")
        self.type("input[name=email]", email)
        self.type("input[name=password]", password)
        self.click("#login")
        wait_for(lambda: self.url.endswith("/admin"), timeout=15, interval=0.2)

    def clear_cookies(self, base_url: str) -> None:
        """Log out of ``base_url`` (cookies are per site: visit it, then drop them)."""
        self.get(base_url)
        self._cmd("DELETE", "/cookie")

    def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        path.write_bytes(base64.b64decode(self._cmd("GET", "/screenshot")))
        return path

    def quit(self) -> None:
        try:
            self.http.delete(f"/session/{self.sid}")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module", name="browser")
def browser_fixture():
    """Import it into a test module to use the ``browser`` fixture there."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("headless Chromium is missing: run `apt-get install -y chromium "
                    "chromium-driver` (Debian) first", pytrace=False)
    wd = WebDriver(chromium, driver)
    yield wd
    wd.quit()
