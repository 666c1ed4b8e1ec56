"""Open a page in headless Chromium: a screenshot, its console errors and every request it made.

Used by the tests (a report renders without errors and fetches nothing) and
by docs/screenshots.py (the README's pictures). Chromium is driven over the
DevTools protocol on a pair of pipes (--remote-debugging-pipe: commands on
its fd 3, replies on fd 4, each message JSON ended by a NUL byte), so no
port is opened and no client library is needed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from charlm.errors import CharlmError

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    """$CHARLM_CHROMIUM, or the first Chromium-family browser on PATH."""
    named = os.environ.get("CHARLM_CHROMIUM")
    if named:
        return shutil.which(named)
    return next((path for path in map(shutil.which, _NAMES) if path), None)


@dataclass
class PageResult:
    png: bytes
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself included
    height: int = 0


class _Pipe:
    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int):
        self.process, self.write_fd, self.read_fd = process, to_browser, from_browser
        self.buffer, self.next_id, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise CharlmError(f"chromium: {method} failed: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        for index, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            event = self._read(deadline - time.monotonic())
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise CharlmError("chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise CharlmError("chromium closed its pipe (it exited)")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)


def _high_fd(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


def render_page(page: Path, width: int = 1200, height: int | None = None, hover: str | None = None,
                browser: str | None = None, timeout: float = 60) -> PageResult:
    """Load `page` (a local file) at `width` CSS pixels and screenshot it (the whole page, or `height` of it).

    hover: a CSS selector; the mouse is moved onto the first match before the screenshot.
    """
    browser = browser or find_chromium()
    if not browser:
        raise CharlmError("no Chromium found; install it (apt-get install chromium) or set CHARLM_CHROMIUM")
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()
    child_in, child_out = _high_fd(commands_read), _high_fd(replies_write)

    def wire_fds() -> None:  # in the child: Chromium reads commands on fd 3 and writes replies on fd 4
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    flags = ["--headless", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
             "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run its sandbox as root (containers, CI)
    with tempfile.TemporaryDirectory(prefix="charlm-chromium-") as profile:
        process = subprocess.Popen([browser, *flags, f"--user-data-dir={profile}", "about:blank"],
                                   preexec_fn=wire_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (commands_read, replies_write, child_in, child_out):
            os.close(fd)
        pipe = _Pipe(process, commands_write, replies_read)
        try:
            return _drive(pipe, page, width, height, hover, timeout)
        finally:
            try:
                pipe.send("Browser.close", timeout=5)
            except (CharlmError, OSError):
                pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(commands_write)
            os.close(replies_read)


def _drive(pipe: _Pipe, page: Path, width: int, height: int | None, hover: str | None, timeout: float) -> PageResult:
    target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.send(f"{domain}.enable", session=session)
    # A short viewport first, so that the page's scrollHeight is its content's height, not the window's.
    viewport = {"width": width, "height": height or 100, "deviceScaleFactor": 1, "mobile": False}
    pipe.send("Emulation.setDeviceMetricsOverride", viewport, session=session)
    pipe.events.clear()
    pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    pipe.wait_for("Page.loadEventFired", timeout)
    full = pipe.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight", "returnByValue": True},
                     session=session)["result"]["value"]
    pipe.send("Emulation.setDeviceMetricsOverride", dict(viewport, height=height or full), session=session)
    if hover:
        box = pipe.send("Runtime.evaluate", {"returnByValue": True, "expression":
                        f"(() => {{ const e = document.querySelector({json.dumps(hover)}); if (!e) return null; "
                        "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                        "return [r.x + r.width / 2, r.y + r.height / 2]; })()"}, session=session)["result"].get("value")
        if box:
            pipe.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0], "y": box[1]}, session=session)
    time.sleep(0.3)  # let layout settle after the resize (and the hover)
    shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}, session=session,
                     timeout=timeout)
    pipe.send("Runtime.evaluate", {"expression": "0"}, session=session)  # flush events queued before this point
    errors, requests = [], []
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            requests.append(params.get("request", {}).get("url", ""))
        elif method == "Network.loadingFailed":
            errors.append(f"failed to load: {params.get('errorText')}")
    return PageResult(png=base64.b64decode(shot["data"]), errors=errors, requests=requests, height=int(full))
