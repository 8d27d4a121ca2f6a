"""Runs a plan's missing jobs on one or several ComfyUI servers.

Each server keeps its own queue; the pilot only decides what to send where. Every server gets
``inflight`` jobs at a time (one running, one waiting in its queue, so it never idles between
jobs). A job whose server stops answering goes back to the front of the list and is taken by
another server (or by the same one once it answers again); a job the server refuses, or that
fails while running, is recorded as failed with the server's reason. A job counts as done only
once its line is in results.jsonl, so an interrupted pilot re-run on the same folder queues
exactly the jobs that have no line yet.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import datetime
import hashlib
import os
import signal
import sys
import time
from dataclasses import dataclass

import aiohttp

from . import plan as plan_mod
from . import results
from .client import Comfy, JobFailed, ServerGone, video_items

MAX_ATTEMPTS = 3      # a job whose server vanished this many times is recorded as failed


@dataclass
class ServerState:
    url: str
    comfy: Comfy | None = None
    done: int = 0
    failed: int = 0
    moved: int = 0
    running: int = 0
    alive: bool = True
    down_since: float | None = None
    last_error: str = ""

    def line(self, elapsed: float) -> str:
        state = "up" if self.alive else f"DOWN ({self.last_error[:60]})"
        # Throughput, not each job's own time: with two in flight a job also waits for the other.
        per = f", one video every {elapsed / self.done:.1f} s" if self.done else ""
        moved = f", moved away {self.moved}" if self.moved else ""
        return f"{self.url}: done {self.done}, failed {self.failed}, in flight {self.running}{moved}{per} [{state}]"


class Progress:
    """Done / failed / in flight per server and the ETA of the whole run; redrawn in place on a
    terminal, one plain line per event otherwise (logs, CI)."""

    def __init__(self, servers: list, total: int, stream=None, tty: bool | None = None):
        self.servers = servers
        self.total = total
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.started = time.monotonic()
        self.drawn = 0

    def eta(self) -> str:
        done = sum(s.done + s.failed for s in self.servers)
        left = self.total - done
        elapsed = time.monotonic() - self.started
        if not done or not left:
            return "" if not left else "ETA unknown"
        return f"ETA {datetime.timedelta(seconds=round(elapsed / done * left))}"

    def lines(self) -> list:
        done = sum(s.done for s in self.servers)
        failed = sum(s.failed for s in self.servers)
        head = f"pilot: {done + failed}/{self.total} (done {done}, failed {failed}) {self.eta()}".rstrip()
        elapsed = time.monotonic() - self.started
        return [head] + ["  " + s.line(elapsed) for s in self.servers]

    def event(self, text: str) -> None:
        if self.tty:
            if self.drawn:
                self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.stream.write(f"{text}\n")
            ls = self.lines()
            self.stream.write("\n".join(ls) + "\n")
            self.drawn = len(ls)
        else:
            self.stream.write(f"{text} | {self.lines()[0]}\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.tty:
            self.stream.write("\n".join(self.lines()[1:]) + "\n")
            self.stream.flush()


class Pilot:
    def __init__(self, plan: plan_mod.Plan, servers: list, out_dir: str, inflight: int | None = None,
                 score: bool = True, give_up_after: float = 120.0, stream=None, tty: bool | None = None,
                 probe_every: float = 2.0):
        if not servers:
            raise ValueError("Give at least one server (--server http://host:8188).")
        self.plan = plan
        self.out = os.path.abspath(out_dir)
        self.inflight = inflight or plan.inflight
        self.score = score
        self.give_up_after = give_up_after
        self.probe_every = probe_every
        self.servers = [ServerState(url=u) for u in dict.fromkeys(servers)]
        self.stream = stream
        self.tty = tty
        self.done = {}
        self.pending = collections.deque()
        self.running = 0
        self.queued = []        # keys sent to a server in this run, in order (resume tests read it)
        self.failed_keys = []
        self.gave_up = False
        self.interrupted = False  # Ctrl-C: take no new job, drop the ones in flight
        self.photos = {}
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="pilot-score")

    # -- bookkeeping ----------------------------------------------------------------------

    def missing(self) -> list:
        self.done = results.done(self.out)
        return [j for j in self.plan.jobs if j.key not in self.done]

    def _take(self, server: ServerState):
        """The first waiting job, preferring one that has not already failed on this server."""
        others_up = any(s.alive and s is not server for s in self.servers)
        for i, job in enumerate(self.pending):
            if others_up and any(url == server.url for url, _ in job.attempts):
                continue
            del self.pending[i]
            return job
        return None

    def _photo(self, person) -> bytes:
        if person.name not in self.photos:
            with open(person.photo, "rb") as f:
                self.photos[person.name] = f.read()
        return self.photos[person.name]

    def _fail(self, job, server: ServerState, reason: str, node: str | None = None, kind: str = "error") -> None:
        server.failed += 1
        self.failed_keys.append(job.key)
        results.append(os.path.join(self.out, results.FAILURES), {
            "key": job.key, "person": job.person.name, "prompt": job.prompt_text, "seed": job.seed,
            "settings": job.settings, "server": server.url, "kind": kind, "reason": reason, "node": node,
            "attempts": [{"server": u, "reason": r} for u, r in job.attempts],
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
        self.progress.event(f"FAILED {job.describe()} on {server.url}: {reason[:300]}")

    # -- one job --------------------------------------------------------------------------

    async def _run_job(self, server: ServerState, job) -> dict:
        t0 = time.monotonic()
        await server.comfy.upload(self._photo(job.person), job.person.upload_name)
        prompt_id, entry, exec_s = await server.comfy.run(job.prompt, self.plan.job_timeout)
        items = video_items(entry, plan_mod.VIDEO_EXTENSIONS)
        if not items:
            raise JobFailed("the workflow finished without saving a video (no mp4/webm/webp output in its history)")
        data = await server.comfy.download(items[0])
        wall = time.monotonic() - t0
        ext = os.path.splitext(items[0]["filename"])[1].lower()
        rel = os.path.join("videos", plan_mod.person_dir(job.person), job.key[:16] + ext)
        path = os.path.join(self.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.replace(path + ".part", path)
        loop = asyncio.get_running_loop()
        scores = {}
        if self.score:
            scores = await loop.run_in_executor(self.pool, _score, path, job.person.photo, self.plan.embedder,
                                                self.plan.model_dirs)
        scores["time_s"] = round(exec_s, 3)
        scores["wall_s"] = round(wall, 3)
        provenance = await loop.run_in_executor(self.pool, _provenance, path)
        consent = provenance.pop("consent", None)
        return {
            "key": job.key, "person": job.person.name, "prompt": job.prompt_text, "seed": job.seed,
            "settings": job.settings, "server": server.url, "prompt_id": prompt_id,
            "file": rel.replace(os.sep, "/"), "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "workflow": self.plan.workflow_name, "models": provenance.pop("models", []),
            "provenance": provenance,
            "consent": {"status": "recorded" if (consent or job.person.consent) else "none",
                        "in_manifest": bool(consent), "record": consent or job.person.consent},
            "scores": scores, "attempts": [{"server": u, "reason": r} for u, r in job.attempts],
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    # -- the workers ----------------------------------------------------------------------

    def _finished(self) -> bool:
        return not self.pending and self.running == 0

    async def _probe(self, server: ServerState) -> None:
        await asyncio.sleep(self.probe_every)
        if await server.comfy.alive():
            server.alive, server.down_since = True, None
            server.comfy.uploaded.clear()  # a restarted server may have lost its input folder
            self.progress.event(f"{server.url} answers again")

    async def _worker(self, server: ServerState) -> None:
        while not self._finished() and not self.gave_up and not self.interrupted:
            if not server.alive:
                if all(not s.alive for s in self.servers) and self.pending and \
                        all(time.monotonic() - (s.down_since or 0) > self.give_up_after for s in self.servers):
                    self.gave_up = True
                    self.progress.event(f"no server has answered for {self.give_up_after:.0f} s: stopping")
                    return
                await self._probe(server)
                continue
            job = self._take(server)
            if job is None:
                await asyncio.sleep(0.2)  # a job may come back from a failing server
                continue
            self.running += 1
            server.running += 1
            self.queued.append(job.key)
            try:
                record = await self._run_job(server, job)
            except ServerGone as e:
                job.attempts.append((server.url, str(e)))
                if server.alive:
                    server.alive, server.down_since, server.last_error = False, time.monotonic(), str(e)
                if len(job.attempts) >= MAX_ATTEMPTS:
                    self._fail(job, server, f"servers failed {MAX_ATTEMPTS} times: " +
                               "; ".join(f"{u}: {r}" for u, r in job.attempts), kind="server")
                else:
                    server.moved += 1
                    self.pending.appendleft(job)
                    self.progress.event(f"moved {job.describe()} off {server.url}: {e}")
            except JobFailed as e:
                self._fail(job, server, e.reason, e.node, e.kind)
            except Exception as e:  # an answer this client did not expect: one job lost, not the whole run
                self._fail(job, server, f"unexpected answer or local error: {type(e).__name__}: {e}", kind="pilot")
            else:
                if job.key in self.done:  # cannot happen through this loop; kept as the last guard
                    continue
                self.done[job.key] = record
                results.append(os.path.join(self.out, results.RESULTS), record)
                server.done += 1
                self.progress.event(f"done {job.describe()} on {server.url}")
            finally:
                self.running -= 1
                server.running -= 1

    def _interrupt(self, workers) -> None:
        self.interrupted = True
        for w in workers:
            w.cancel()

    async def run(self) -> dict:
        os.makedirs(self.out, exist_ok=True)
        todo = self.missing()
        self.pending.extend(todo)
        self.progress = Progress(self.servers, len(todo), self.stream, self.tty)
        skipped = len(self.plan.jobs) - len(todo)
        self.progress.event(f"{len(self.plan.jobs)} jobs in the plan, {skipped} already done, queueing {len(todo)} "
                            f"on {len(self.servers)} server(s), {self.inflight} at a time each")
        if todo:
            async with aiohttp.ClientSession() as session:
                for s in self.servers:
                    s.comfy = Comfy(s.url, session)
                    if not await s.comfy.alive():
                        s.alive, s.down_since, s.last_error = False, time.monotonic(), "not answering at start"
                workers = [asyncio.ensure_future(self._worker(s)) for s in self.servers for _ in range(self.inflight)]
                # Ctrl-C is handled here rather than by asyncio.run's cancelling of the main task: a
                # cancellation that lands while a websocket wait completes can be lost (Python 3.11's
                # wait_for), and the run then went on to the end. The flag stops every worker at its
                # next job even then.
                loop = asyncio.get_running_loop()
                try:
                    loop.add_signal_handler(signal.SIGINT, self._interrupt, workers)
                    handled = True
                except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                    handled = False
                try:
                    await asyncio.gather(*workers)
                except asyncio.CancelledError:
                    if not self.interrupted:
                        raise
                finally:
                    if handled:
                        loop.remove_signal_handler(signal.SIGINT)
                    for w in workers:
                        w.cancel()
        self.progress.close()
        self.pool.shutdown(wait=True)
        if self.interrupted:
            raise KeyboardInterrupt
        return {"jobs": len(self.plan.jobs), "already_done": skipped, "queued": len(self.queued),
                "seconds": round(time.monotonic() - self.progress.started, 1),
                "done": sum(s.done for s in self.servers), "failed": len(self.failed_keys),
                "not_run": len(self.pending), "queued_keys": list(self.queued)}


def _score(video: str, photo: str, embedder: str, model_dirs=()) -> dict:
    from . import score
    try:
        return score.score_file(video, photo, embedder, model_dirs)
    except Exception as e:  # a video the scorer cannot read is still a result; say why it has no figures
        return {"error": f"{type(e).__name__}: {e}"}


def _provenance(video: str) -> dict:
    """Model and adapter files with their sha256, and the consent record, from the video's C2PA
    manifest (what the server actually used, not what the plan asked for)."""
    try:
        from ..provenance import c2pa_label
        v = c2pa_label.verify(video)
    except Exception as e:  # c2pa-python missing or the file unreadable: the figures still count
        return {"models": [], "manifest": False, "error": f"{type(e).__name__}: {e}"}
    if not v.has_manifest:
        return {"models": [], "manifest": False, "error": v.error or "no C2PA manifest"}
    models = [{"role": m.get("role"), "name": m.get("name"), "sha256": m.get("sha256")}
              for m in v.generation.get("models", [])]
    return {"models": models, "manifest": True, "valid": v.valid, "ai_generated": v.ai_generated,
            "self_signed": v.self_signed, "consent": v.generation.get("consent")}
