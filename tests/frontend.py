"""Drive ComfyUI's real frontend in headless Chromium (Chrome DevTools Protocol over aiohttp).

Used to check that a UI workflow, loaded onto the real canvas, queues exactly its API twin,
and to take screenshots of the canvas.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--window-size=1600,1000"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Frontend:
    def __init__(self, server_url: str, viewport: tuple[int, int] | None = None):
        self.server_url = server_url
        self.viewport = viewport  # (width, height) of the page, e.g. a 1920x1080 screen
        self.port = _free_port()
        self.profile = tempfile.mkdtemp(prefix="standin-chromium-")
        self.proc = None

    def __enter__(self):
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("Chromium is not installed (apt-get install chromium)")
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--remote-debugging-port={self.port}",
                                      f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def run(self, coro_fn, timeout=180):
        return asyncio.run(asyncio.wait_for(self._session(coro_fn), timeout))

    async def _session(self, coro_fn):
        import aiohttp
        async with aiohttp.ClientSession() as http:
            targets = None
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{self.port}/json/list") as r:
                        targets = await r.json()
                    if any(t.get("type") == "page" for t in targets):
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
            page = next(t for t in targets if t.get("type") == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _CDP(ws)
                await cdp.call("Page.enable")
                await cdp.call("Runtime.enable")
                if self.viewport:
                    await cdp.call("Emulation.setDeviceMetricsOverride", width=self.viewport[0],
                                   height=self.viewport[1], deviceScaleFactor=1, mobile=False)
                await cdp.call("Page.navigate", url=self.server_url)
                await cdp.wait_for("typeof window.app !== 'undefined' && !!window.app.graph && "
                                   "!!document.querySelector('canvas')")
                return await coro_fn(cdp)


class _CDP:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        await self.ws.send_str(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {json.dumps(result['exceptionDetails'])[:2000]}")
        return result["result"].get("value")

    async def wait_for(self, condition, timeout=90):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                # Boolean(promise) is always true: an async condition must be awaited first.
                if await self.evaluate(f"Promise.resolve({condition}).then(Boolean)"):
                    return
            except RuntimeError:
                pass
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the page never satisfied: {condition}")

    async def queued_prompt(self, ui_workflow: dict, name: str) -> dict:
        """Load a UI workflow onto the canvas and return what the canvas would queue."""
        payload = json.dumps(json.dumps(ui_workflow))
        out = await self.evaluate(
            "(async () => {"
            f" await window.app.loadGraphData(JSON.parse({payload}), true, true, {json.dumps(name)});"
            " const p = await window.app.graphToPrompt();"
            " return JSON.stringify(p.output);"
            "})()")
        prompt = json.loads(out)
        for node in prompt.values():
            node.pop("_meta", None)
        return prompt

    async def screenshot(self, path):
        await asyncio.sleep(1.0)
        data = await self.call("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))
        return path
