"""Headless Chromium (Debian's `chromium` package) driven over the DevTools protocol with the
`websockets` client: no Playwright, no downloaded browser. Launch it, open a page, evaluate
JavaScript in it, wait for a condition; the page's console, uncaught errors and websocket frames
are recorded, so a failed wait can say what the page was doing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

chromium_path_default = "/usr/bin/chromium"
# Chromium writes its DevTools port within a second or two; a cold first start can take longer.
launch_timeout_s = 30.0
command_timeout_s = 30.0
close_timeout_s = 10.0
poll_interval_s = 0.1
# What a failed wait shows of the page's console and text.
console_tail_lines = 30
page_text_chars_max = 2000

launch_flags = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)


def chromium_executable() -> str | None:
    """LEDGER_CHROMIUM, /usr/bin/chromium, or `chromium` on PATH; None when there is none."""
    configured = os.environ.get("LEDGER_CHROMIUM")
    if configured:
        return configured
    if os.access(chromium_path_default, os.X_OK):
        return chromium_path_default
    return shutil.which("chromium")


class BrowserError(RuntimeError):
    """Chromium did not start, or answered a command with an error."""


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], connection: Any, log_path: Path) -> None:
        self.process = process
        self.connection = connection
        self.log_path = log_path
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.pages: dict[str, Page] = {}
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def launch(cls, executable: str, folder: Path) -> Browser:
        """Start Chromium with a fresh profile under `folder` (its log goes there too)."""
        profile = folder / "profile"
        profile.mkdir(parents=True)
        log_path = folder / "chromium.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [executable, *launch_flags, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + launch_timeout_s
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                raise BrowserError(
                    f"chromium did not start (exit code {process.returncode}): "
                    + log_path.read_text(errors="replace")[-2000:]
                )
            await asyncio.sleep(poll_interval_s)
        port, path = port_file.read_text().splitlines()[:2]
        connection = await websockets.connect(
            f"ws://127.0.0.1:{port}{path}", max_size=None, ping_interval=None
        )
        return cls(process, connection, log_path)

    async def _read(self) -> None:
        async for raw in self.connection:
            message = orjson.loads(raw)
            if "id" in message:
                future = self.waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(BrowserError(str(message["error"])))
                    else:
                        future.set_result(message.get("result", {}))
            elif (page := self.pages.get(message.get("sessionId", ""))) is not None:
                page.on_event(message["method"], message.get("params", {}))

    async def send(self, method: str, session_id: str | None = None, **params: Any) -> Any:
        command_id = next(self.ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[command_id] = future
        await self.connection.send(orjson.dumps(message).decode())
        return await asyncio.wait_for(future, command_timeout_s)

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        page = Page(self, attached["sessionId"])
        self.pages[page.session_id] = page
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close"), close_timeout_s)
        with contextlib.suppress(Exception):
            await self.connection.close()
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader
        _stop(self.process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=close_timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Page:
    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id
        self.console: list[str] = []
        # Every websocket the page opened (url) and every frame it received (payload text).
        self.sockets: list[str] = []
        self.frames_received: list[str] = []
        self.frames_sent: list[str] = []

    async def send(self, method: str, **params: Any) -> Any:
        return await self.browser.send(method, self.session_id, **params)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(
                str(argument.get("value", argument.get("description", "")))
                for argument in params.get("args", [])
            )
            self.console.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"uncaught: {description}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(
                f"log.{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}"
            )
        elif method == "Network.webSocketCreated":
            self.sockets.append(params.get("url", ""))
        elif method == "Network.webSocketFrameReceived":
            frame = params.get("response", {})
            if frame.get("opcode") == 1:  # text frames: the protocol's JSON (not pings)
                self.frames_received.append(frame.get("payloadData", ""))
        elif method == "Network.webSocketFrameSent":
            frame = params.get("response", {})
            if frame.get("opcode") == 1:
                self.frames_sent.append(frame.get("payloadData", ""))

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, what: str, timeout_s: float = 30.0) -> Any:
        """Poll `expression` until it is truthy and return its value; on timeout fail with what
        the page showed and logged."""
        deadline = time.monotonic() + timeout_s
        value: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):
                value = await self.evaluate(expression)
                if value:
                    return value
            await asyncio.sleep(poll_interval_s)
        raise AssertionError(
            f"timed out after {timeout_s} s waiting for {what} ({expression} = {value!r})\n"
            + await self.describe()
        )

    async def describe(self) -> str:
        text: Any = ""
        with contextlib.suppress(Exception):
            text = await self.evaluate("document.body ? document.body.innerText : ''")
        console = "\n".join(self.console[-console_tail_lines:])
        return (
            f"page text:\n{str(text)[:page_text_chars_max]}\n"
            f"console:\n{console}\n"
            f"websockets opened: {self.sockets}\n"
            f"frames received: {len(self.frames_received)}"
        )
