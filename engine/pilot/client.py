"""One ComfyUI server over its standard API: POST /upload/image, POST /prompt, /ws events,
GET /history/<id>, GET /view. Nothing pack-specific: any ComfyUI answers these.

Two kinds of trouble, told apart because the dispatcher treats them differently:
``ServerGone`` (the server did not answer, the connection dropped, the run was interrupted or
took too long): the job is not at fault and goes to another server. ``JobFailed`` (the server
refused the prompt, or a node raised while running it): the server's reason is recorded and the
job is not tried elsewhere, since another server would give the same answer.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp


class ServerGone(Exception):
    pass


class JobFailed(Exception):
    def __init__(self, reason: str, node: str | None = None, kind: str = "error"):
        super().__init__(reason)
        self.reason = reason
        self.node = node
        self.kind = kind


CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError,
                     asyncio.TimeoutError, OSError)


def refusal_reason(status: int, body) -> str:
    """A readable reason from POST /prompt's answer: the error and every node's messages."""
    if not isinstance(body, dict):
        return f"HTTP {status}: {str(body)[:1000]}"
    parts = []
    err = body.get("error")
    if isinstance(err, dict):
        parts.append(": ".join(x for x in (err.get("message"), err.get("details")) if x))
    elif err:
        parts.append(str(err))
    for nid, ne in (body.get("node_errors") or {}).items():
        for e in ne.get("errors", []):
            text = e.get("details") or e.get("message") or ""
            parts.append(f"node {nid} ({ne.get('class_type', '?')}): {text}")
    return f"HTTP {status}: " + (" | ".join(p for p in parts if p) or json.dumps(body)[:1000])


class Comfy:
    def __init__(self, url: str, session: aiohttp.ClientSession, timeout: float = 60.0):
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            self.url = "http://" + self.url
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.uploaded: set = set()

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http"):] + "/ws"

    async def _get(self, path: str, raw: bool = False):
        try:
            async with self.session.get(self.url + path, timeout=self.timeout) as r:
                if r.status >= 500:
                    raise ServerGone(f"GET {path}: HTTP {r.status}")
                r.raise_for_status()
                return await r.read() if raw else await r.json(content_type=None)
        except CONNECTION_ERRORS as e:
            raise ServerGone(f"GET {path}: {type(e).__name__}: {e}") from None
        except aiohttp.ClientResponseError as e:
            raise ServerGone(f"GET {path}: HTTP {e.status}") from None

    async def alive(self) -> bool:
        try:
            await self._get("/system_stats")
            return True
        except ServerGone:
            return False

    async def upload(self, data: bytes, name: str) -> None:
        """The photo into the server's input folder under ``name`` (once per server and run)."""
        if name in self.uploaded:
            return
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true")
        try:
            async with self.session.post(self.url + "/upload/image", data=form, timeout=self.timeout) as r:
                if r.status >= 500:
                    raise ServerGone(f"upload: HTTP {r.status}")
                if r.status != 200:
                    raise JobFailed(f"the server refused the photo upload: HTTP {r.status} {await r.text()}")
                answer = await r.json(content_type=None)
        except CONNECTION_ERRORS as e:
            raise ServerGone(f"upload: {type(e).__name__}: {e}") from None
        if answer.get("name") != name or answer.get("subfolder"):
            raise JobFailed(f"the server stored the photo as {answer}, not as {name}")
        self.uploaded.add(name)

    async def queue(self, prompt: dict, client_id: str) -> str:
        try:
            async with self.session.post(self.url + "/prompt", json={"prompt": prompt, "client_id": client_id},
                                         timeout=self.timeout) as r:
                text = await r.text()
                try:
                    body = json.loads(text) if text else {}
                except ValueError:
                    body = text
                if r.status >= 500:
                    raise ServerGone(f"POST /prompt: HTTP {r.status}")
                if r.status != 200 or (isinstance(body, dict) and body.get("node_errors")):
                    raise JobFailed(refusal_reason(r.status, body), kind="refused")
                return body["prompt_id"]
        except CONNECTION_ERRORS as e:
            raise ServerGone(f"POST /prompt: {type(e).__name__}: {e}") from None

    async def run(self, prompt: dict, timeout: float, on_event=None) -> tuple[str, dict, float]:
        """Queue ``prompt`` with a websocket open and wait for its end. Returns (prompt_id,
        its /history entry, seconds from its execution start to its end)."""
        client_id = uuid.uuid4().hex
        try:
            ws = await self.session.ws_connect(f"{self.ws_url}?clientId={client_id}", heartbeat=20)
        except CONNECTION_ERRORS + (aiohttp.WSServerHandshakeError,) as e:
            raise ServerGone(f"websocket: {type(e).__name__}: {e}") from None
        try:
            prompt_id = await self.queue(prompt, client_id)
            deadline = time.monotonic() + timeout
            started = None
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerGone(f"prompt {prompt_id} did not finish within {timeout:.0f} s")
                try:
                    msg = await ws.receive(timeout=min(left, 10.0))
                except asyncio.TimeoutError:
                    # Quiet for a while (a long node, or messages missed): ask the history.
                    entry = await self._history(prompt_id)
                    if entry is not None:
                        return prompt_id, self._check(entry), 0.0 if started is None else time.monotonic() - started
                    continue
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSE,
                                aiohttp.WSMsgType.ERROR):
                    raise ServerGone(f"websocket closed while prompt {prompt_id} ran")
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue  # binary previews
                event = json.loads(msg.data)
                data = event.get("data") or {}
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                kind = event.get("type")
                if on_event is not None:
                    on_event(event)
                if kind == "execution_start":
                    started = time.monotonic()
                elif kind == "execution_error":
                    raise JobFailed(f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}",
                                    node=f"{data.get('node_id')} ({data.get('node_type')})")
                elif kind == "execution_interrupted":
                    raise ServerGone(f"prompt {prompt_id} was interrupted on the server")
                elif kind == "execution_success":
                    seconds = 0.0 if started is None else time.monotonic() - started
                    for _ in range(50):  # the history entry is written right after the event
                        entry = await self._history(prompt_id)
                        if entry is not None:
                            return prompt_id, self._check(entry), seconds
                        await asyncio.sleep(0.1)
                    raise ServerGone(f"prompt {prompt_id} succeeded but has no history entry")
        finally:
            await ws.close()

    async def _history(self, prompt_id: str):
        h = await self._get(f"/history/{prompt_id}")
        entry = (h or {}).get(prompt_id)
        if entry and (entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") == "error"):
            return entry
        return None

    @staticmethod
    def _check(entry: dict) -> dict:
        status = entry.get("status", {})
        if status.get("status_str") == "error":
            for kind, data in status.get("messages", []):
                if kind == "execution_error":
                    raise JobFailed(f"{data.get('exception_type', 'error')}: {data.get('exception_message', '').strip()}",
                                    node=f"{data.get('node_id')} ({data.get('node_type')})")
            raise JobFailed("the prompt ended with an error (no message in its history)")
        return entry

    async def download(self, item: dict) -> bytes:
        from urllib.parse import urlencode
        query = urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                           "type": item.get("type", "output")})
        return await self._get(f"/view?{query}", raw=True)


def video_items(entry: dict, extensions) -> list[dict]:
    """The saved videos in a /history entry's outputs (any node, any key)."""
    out = []
    for node_out in (entry.get("outputs") or {}).values():
        for items in node_out.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and str(item.get("filename", "")).lower().endswith(extensions):
                    if item.get("type", "output") == "output":
                        out.append(item)
    return out
