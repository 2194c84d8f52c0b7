"""Headless Chromium (Debian's package) driven over the DevTools protocol, with aiohttp's websocket client.

What the browser tests need and no more: open a page at a size, click, choose an option, evaluate, wait
for a condition, take a full-page screenshot, and collect the page's uncaught exceptions and console or
log errors (a CSP violation is one). This replaces Playwright, a 50 MB+ wheel with its own driver, for a
few calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = Path("/usr/bin/chromium")
# Root in a container: no sandbox; no GPU; nothing that reaches beyond 127.0.0.1.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
LAUNCH_SECONDS = 30.0
COMMAND_SECONDS = 60.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(AssertionError):
    pass


class Connection:
    """One DevTools websocket: commands by id, events dispatched to the page sessions they belong to."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.pages: dict[str, Page] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps(message))
        async with asyncio.timeout(COMMAND_SECONDS):
            reply = await future
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    async def _read(self) -> None:
        async for frame in self._ws:
            if frame.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif (page := self.pages.get(message.get("sessionId", ""))) is not None:
                page.on_event(message["method"], message.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrowserError("the browser closed the connection"))

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


class Page:
    def __init__(self, connection: Connection, session: str) -> None:
        self._connection = connection
        self._session = session
        # Uncaught exceptions, console.error calls and error log entries (CSP violations, failed loads).
        self.errors: list[str] = []
        self._loaded: asyncio.Event = asyncio.Event()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict:
        return await self._connection.send(method, params, self._session)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.errors.append(params["entry"].get("text", "log error"))

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        await self.send("Page.navigate", {"url": url})
        async with asyncio.timeout(COMMAND_SECONDS):
            await self._loaded.wait()

    async def evaluate(self, function: str) -> Any:
        """The value of `function` (JavaScript source of a function taking no argument), awaited if a promise."""
        reply = await self.send(
            "Runtime.evaluate", {"expression": f"({function})()", "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"evaluate failed: {reply['exceptionDetails'].get('text')}")
        return reply["result"].get("value")

    async def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the middle of the element."""
        box = await self.evaluate(
            f"() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; }"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def select(self, selector: str, value: str) -> None:
        """Choose the option of a <select> that has this value, as a user would: its input and change events fire."""
        chosen = await self.evaluate(
            f"() => {{ const select = document.querySelector({json.dumps(selector)}), value = {json.dumps(value)};"
            " if (![...select.options].some((option) => option.value === value)) return false;"
            " select.value = value;"
            " for (const type of ['input', 'change']) select.dispatchEvent(new Event(type, {bubbles: true}));"
            " return true; }"
        )
        if not chosen:
            raise BrowserError(f"{selector} has no option {value!r}")

    async def wait_for_function(self, function: str, within: float) -> None:
        """Poll `function` until it returns something true; fail after `within` seconds."""
        deadline = time.monotonic() + within
        while not await self.evaluate(function):
            if time.monotonic() > deadline:
                raise BrowserError(f"not within {within:g} s: {function}")
            await asyncio.sleep(0.05)

    async def inner_text(self, selector: str) -> str:
        return await self.evaluate(f"() => document.querySelector({json.dumps(selector)}).innerText")

    async def url(self) -> str:
        return await self.evaluate("() => location.href")

    async def screenshot(self, path: Path) -> None:
        """The whole page, as PNG, laid out as in a window as tall as the page. A page taller than the
        viewport has a scrollbar, which narrows the layout; the capture beyond the viewport, laid out without
        it, would then lose its right edge. So the viewport grows past the page (no scrollbar), the page's own
        height is measured at that width, and the viewport takes exactly that height for the capture."""
        width, height = await self.evaluate("() => [window.innerWidth, window.innerHeight]")
        page_height = "() => Math.ceil(document.documentElement.getBoundingClientRect().height)"
        await self._viewport(width, max(height, await self.evaluate(page_height) + 200))
        try:
            full = max(height, await self.evaluate(page_height))
            await self._viewport(width, full)
            clip = {"x": 0, "y": 0, "width": width, "height": full, "scale": 1}
            shot = await self.send(
                "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
            )
        finally:
            await self._viewport(width, height)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def _viewport(self, width: int, height: int) -> None:
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )


class Browser:
    def __init__(self, process: asyncio.subprocess.Process, profile: Path, connection: Connection) -> None:
        self._process = process
        self._profile = profile
        self._connection = connection

    async def new_page(self, width: int, height: int) -> Page:
        target = await self._connection.send("Target.createTarget", {"url": "about:blank"})
        attached = await self._connection.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self._connection, attached["sessionId"])
        self._connection.pages[attached["sessionId"]] = page
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        await page._viewport(width, height)
        return page


async def _devtools_url(process: asyncio.subprocess.Process, log: Path) -> str:
    deadline = time.monotonic() + LAUNCH_SECONDS
    while not (found := _LISTENING.search(printed := await asyncio.to_thread(log.read_text, errors="replace"))):
        if process.returncode is not None or time.monotonic() > deadline:
            raise BrowserError(f"Chromium did not start (exit {process.returncode}):\n{printed[-2000:]}")
        await asyncio.sleep(0.05)
    return found.group(1)


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """Headless Chromium with a throw-away profile, closed (and its profile removed) at the end."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-"))
    log = profile / "stderr.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            str(CHROMIUM),
            *CHROMIUM_ARGS,
            f"--user-data-dir={profile / 'profile'}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        url = await _devtools_url(process, log)
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url, max_msg_size=0)
            connection = Connection(ws)
            try:
                yield Browser(process, profile, connection)
            finally:
                with contextlib.suppress(BrowserError, TimeoutError):
                    await connection.send("Browser.close")
                await connection.close()
    finally:
        if process.returncode is None:
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(profile, ignore_errors=True)
