"""A real ComfyUI server process for end-to-end tests (and the demo): start, talk, stop."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
LAUNCHER = os.path.join(HERE, "launch_comfyui.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptRejected(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {json.dumps(body)[:2000]}")
        self.status = status
        self.body = body


class ComfyServer:
    def __init__(self, base_dir: str, port: int | None = None, test_nodes: bool = True, log_path: str | None = None,
                 extra_args: list | None = None):
        self.base_dir = base_dir
        self.extra_args = list(extra_args or [])
        self.port = port or free_port()
        self.test_nodes = test_nodes
        self.log_path = log_path or os.path.join(base_dir, "server.log")
        self.proc = None
        self.client_id = uuid.uuid4().hex

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        os.makedirs(self.base_dir, exist_ok=True)
        cmd = [sys.executable, LAUNCHER, "--base-directory", self.base_dir, "--port", str(self.port)]
        if self.test_nodes:
            cmd.append("--test-nodes")
        if self.extra_args:
            cmd += ["--"] + self.extra_args
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/system_stats")
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if getattr(self, "_log", None):
            self._log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""

    # -- HTTP ---------------------------------------------------------------------------

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            data = r.read()
        return json.loads(data) if data else None

    def post(self, path: str, body: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                data = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"raw": raw.decode("utf-8", "replace")}
            raise PromptRejected(e.code, body) from None
        return json.loads(data) if data else None

    def queue(self, prompt: dict) -> str:
        answer = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        if answer.get("node_errors"):
            raise PromptRejected(200, answer)
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if history and prompt_id in history:
                entry = history[prompt_id]
                if entry.get("status", {}).get("completed") or entry.get("status", {}).get("status_str") in ("success", "error"):
                    return entry
            if not self.alive():
                raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log_tail()}")
            time.sleep(0.3)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def free(self) -> None:
        """Drop ComfyUI's cached node outputs and loaded models, so the next prompt runs from scratch.

        ComfyUI's worker reads the /free flags after each prompt; when it is idle it may not
        see them until it has run the next prompt. A small prompt run right after makes sure
        the flags are applied before anything else is queued."""
        self.post("/free", {"unload_models": True, "free_memory": True})
        if not self.test_nodes:
            raise RuntimeError("free() needs the test nodes (ComfyServer(test_nodes=True))")
        self.run({"1": {"class_type": "StandInTest_PackStats", "inputs": {"label": "free"}}})

    # -- websocket ------------------------------------------------------------------------

    END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")

    async def follow(self, prompt: dict, on_event=None, timeout: float = 3600.0) -> tuple[str, dict]:
        """Queue ``prompt`` with the websocket open, call ``await on_event(event, session)`` for
        each of its events, and return (prompt_id, the event that ended it)."""
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}") as ws:
                prompt_id = await asyncio.get_running_loop().run_in_executor(None, self.queue, prompt)
                deadline = time.time() + timeout
                while time.time() < deadline:
                    msg = await ws.receive(timeout=max(1.0, deadline - time.time()))
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    if event.get("data", {}).get("prompt_id") not in (None, prompt_id):
                        continue
                    if on_event is not None:
                        await on_event(event, session)
                    if event["type"] in self.END_EVENTS:
                        return prompt_id, event
        raise TimeoutError(f"no end of execution seen on the websocket within {timeout:.0f} s")

    def interrupt_when_running(self, prompt: dict, node_id: str, after_progress: int = 2,
                               timeout: float = 600.0) -> tuple[str, list]:
        """Queue ``prompt``, POST /interrupt once node ``node_id`` has reported
        ``after_progress`` steps, and return (prompt_id, the prompt's websocket events)."""
        events = []
        sent = []

        async def on_event(event, session):
            events.append(event)
            data = event.get("data", {})
            if (not sent and event["type"] == "progress" and data.get("node") == node_id
                    and data.get("value", 0) >= after_progress):
                await session.post(f"{self.url}/interrupt", json={})
                sent.append(data["value"])

        prompt_id, _ = asyncio.run(self.follow(prompt, on_event, timeout))
        return prompt_id, events
