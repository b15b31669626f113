"""The task queue under an open-loop load of many annotators (``bench.queue --parts open``).

Each simulated annotator holds one task: it heartbeats the lease every ``heartbeat_s`` (30 s) and, after a
work time drawn uniformly between half and one and a half ``work_s`` (default 300 s: "every few minutes"),
submits a 1 MiB segmentation and claims its next task. Open loop: every request is sent at its scheduled
time whatever the server's state, and its latency counts from that time (a request that waits for a free
connection in the generator waits in the figure too, so a slow server cannot hide by slowing its clients
down). The steady state is set up before the measurement: every annotator claims a task first, and its
first submission and heartbeat fall at random phases, so the rates are steady from the first second:
annotators / heartbeat_s heartbeats per second, annotators / work_s claims and submissions per second.

Annotators are users with tokens and the annotator role written straight into the database (10,000
accounts through the API would take minutes); everything measured goes through the HTTP API. The
generators are asyncio processes with a pool of keep-alive connections each (as a reverse proxy in
front of the server would hold), every annotator sending its own token.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import multiprocessing
import os
import random
import time

import numpy as np

CONNECTIONS = 64  # per generator process


class Connection:
    def __init__(self, port: int):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
            try:
                self.writer.write(head.encode() + body)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionError("closed")
                status = int(status_line.split()[1])
                length = 0
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                return status, await self.reader.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                self.writer.close()
                self.writer = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _multipart(boundary: str, lease_id: str, seg: bytes, metadata: str) -> bytes:
    return b"".join([
        f'--{boundary}\r\nContent-Disposition: form-data; name="lease_id"\r\n\r\n{lease_id}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{metadata}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="segmentation"; filename="reader.seg.nrrd"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        seg,
        f"\r\n--{boundary}--\r\n".encode(),
    ])  # fmt: skip


class Generator:
    """One process's annotators, scheduled on a heap and sent over a pool of connections."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.rng = random.Random(spec["seed"])
        self.base = f"/api/v1/projects/{spec['project']}/tasks"
        self.pool: asyncio.Queue = asyncio.Queue()
        self.records: list[tuple[str, float, float, int]] = []  # (kind, scheduled, ended, status)
        self.errors: list[str] = []
        self.heap: list = []
        self.seg = bytearray(spec["seg"])
        self.boundary = "benchopen" + os.urandom(6).hex()
        self.counter = spec["seed"] << 24
        self.inflight: set = set()

    async def send(self, kind: str, scheduled: float, method: str, path: str, token: str, body: bytes, extra=None,
                   still=None):  # fmt: skip
        connection = await self.pool.get()
        if still is not None and not still():  # what it was for is over (a lease submitted meanwhile)
            self.pool.put_nowait(connection)
            return 0, b""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(extra or {})}
        try:
            status, answer = await connection.request(method, path, headers, body)
        except Exception as error:  # a refused or broken connection counts as an error, not a latency
            self.errors.append(f"{kind}: {error!r}")
            status, answer = 0, b""
        finally:
            self.pool.put_nowait(connection)
        self.records.append((kind, scheduled, time.perf_counter(), status))
        if status >= 400 and len(self.errors) < 20:
            self.errors.append(f"{kind} {status} {answer[:200]!r}")
        return status, answer

    async def claim(self, who: dict, scheduled: float) -> bool:
        body = json.dumps({"lease_seconds": 3600}).encode()
        status, answer = await self.send("claim", scheduled, "POST", self.base + "/claim", who["token"], body)
        task = json.loads(answer).get("task") if status == 200 else None
        who["task"] = task
        return task is not None

    async def heartbeat(self, who: dict, scheduled: float) -> None:
        task = who["task"]
        if task is None:
            return
        body = json.dumps({"lease_id": task["lease_id"]}).encode()
        path = f"{self.base}/{task['id']}/heartbeat"
        await self.send("heartbeat", scheduled, "POST", path, who["token"], body, still=lambda: who["task"] is task)

    async def submit_and_claim(self, who: dict, scheduled: float) -> None:
        task, who["task"] = who["task"], None  # no heartbeat of a task being submitted
        if task is not None:
            self.counter += 1
            self.seg[-32:] = bytes((self.counter >> bit) & 1 for bit in range(32))  # unique content
            body = _multipart(self.boundary, task["lease_id"], bytes(self.seg), self.spec["metadata"])
            extra = {"Content-Type": f"multipart/form-data; boundary={self.boundary}",
                     "Idempotency-Key": f"open-{self.counter}"}  # fmt: skip
            await self.send("submit", scheduled, "POST", f"{self.base}/{task['id']}/submissions", who["token"],
                            body, extra)  # fmt: skip
        await self.claim(who, time.perf_counter())

    def schedule(self, when: float, who: dict, action: str) -> None:
        heapq.heappush(self.heap, (when, id(who), action, who))

    def spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def run(self) -> dict:
        spec = self.spec
        for _ in range(CONNECTIONS):
            self.pool.put_nowait(Connection(spec["port"]))
        annotators = [{"token": token, "task": None} for token in spec["tokens"]]
        # the steady state first: every annotator holds a task (not measured)
        for start in range(0, len(annotators), 256):
            await asyncio.gather(*(self.claim(who, 0.0) for who in annotators[start : start + 256]))
        self.records.clear()
        self.errors.clear()
        begin = time.perf_counter() + 0.5
        work, beat = spec["work_s"], spec["heartbeat_s"]
        for who in annotators:
            self.schedule(begin + self.rng.uniform(0, beat), who, "heartbeat")
            self.schedule(begin + self.rng.uniform(0, work), who, "submit")
        stop_at = begin + spec["warmup_s"] + spec["duration_s"]
        cpu_from, wall_from = time.process_time(), time.perf_counter()
        while self.heap and self.heap[0][0] < stop_at:
            when, _, action, who = heapq.heappop(self.heap)
            delay = when - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if action == "heartbeat":
                self.spawn(self.heartbeat(who, when))
                self.schedule(when + beat, who, "heartbeat")
            else:
                self.spawn(self.submit_and_claim(who, when))
                self.schedule(when + self.rng.uniform(0.5 * work, 1.5 * work), who, "submit")
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=120)
        start_measuring = begin + spec["warmup_s"]
        kept = [record for record in self.records if record[1] >= start_measuring]
        cpu_s, wall_s = time.process_time() - cpu_from, time.perf_counter() - wall_from
        return {"records": kept, "errors": self.errors[:10], "cpu_s": cpu_s, "wall_s": wall_s}


def _generate(spec: dict, queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    queue.put(asyncio.run(Generator(spec).run()))


def run_open_loop(ports: list[int], project: int, tokens: list[str], seg: bytes, args, cpu) -> dict:
    """Run the open-loop mix with ``args.annotators`` annotators over ``args.generators`` processes;
    ``cpu()`` gives the servers' and PostgreSQL's CPU seconds so far. Figures per kind and overall."""
    metadata = json.dumps({"time_spent_s": 1.0, "client": "bench/queue_open.py", "overrides": args.overrides})
    procs = max(1, args.generators)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = []
    for index in range(procs):
        spec = {"port": ports[index % len(ports)], "project": project, "tokens": tokens[index::procs], "seg": seg,
                "metadata": metadata, "seed": index + 1, "work_s": args.work_s, "heartbeat_s": args.heartbeat_s,
                "warmup_s": args.open_warmup_s, "duration_s": args.open_s}  # fmt: skip
        workers.append(context.Process(target=_generate, args=(spec, results)))
    for worker in workers:
        worker.start()
    # the generators claim for every annotator first, then measure: sample CPU around the measured part
    setup_s = len(tokens) / 500 + 5
    time.sleep(setup_s)
    before = cpu()
    outcome = [results.get(timeout=setup_s + args.open_warmup_s + args.open_s + 600) for _ in workers]
    after = cpu()
    for worker in workers:
        worker.join(timeout=60)
    records = [record for part in outcome for record in part["records"]]
    errors = [error for part in outcome for error in part["errors"]]
    summary = {"annotators": len(tokens), "work_s": args.work_s, "heartbeat_s": args.heartbeat_s,
               "seconds": args.open_s, "errors": errors[:10], "kinds": {}}  # fmt: skip
    for kind in ("heartbeat", "claim", "submit", "all"):
        chosen = [r for r in records if kind == "all" or r[0] == kind]
        latencies = np.array([r[2] - r[1] for r in chosen if 0 < r[3] < 400]) * 1000
        failed = sum(1 for r in chosen if not 0 < r[3] < 400)
        summary["kinds"][kind] = {
            "count": len(chosen),
            "per_s": len(chosen) / args.open_s,
            "failed": failed,
            "p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "p99_ms": float(np.percentile(latencies, 99)) if len(latencies) else None,
            "max_ms": float(latencies.max()) if len(latencies) else None,
        }
    operations = len(records)
    summary["server_cpu_s_per_1000"] = (after[0] - before[0]) / operations * 1000 if operations else None
    summary["server_cpu_util"] = (after[0] - before[0]) / max(1e-9, after[2] - before[2])
    summary["generator_cpu_util"] = sum(part["cpu_s"] / part["wall_s"] for part in outcome)
    return summary


def add_annotators(url: str, project: int, count: int) -> list[str]:
    """``count`` annotators of ``project`` with one token each, written straight into the database."""
    from sqlalchemy import insert

    from medannotassist_server.auth import new_token, token_hash
    from medannotassist_server.db import make_engine
    from medannotassist_server.models import ApiToken, Membership, User, utcnow

    engine = make_engine(url)
    tokens = [new_token() for _ in range(count)]
    tag = os.urandom(3).hex()
    now = utcnow()
    try:
        with engine.begin() as connection:
            users = [{"name": f"open-{tag}-{i:05d}", "is_site_admin": False, "created_at": now} for i in range(count)]
            connection.execute(insert(User), users)
            ids = dict(connection.execute(User.__table__.select().with_only_columns(User.name, User.id)).all())
            ids = [ids[user["name"]] for user in users]
            connection.execute(insert(ApiToken), [
                {"user_id": uid, "token_hash": token_hash(token), "label": "bench", "created_at": now}
                for uid, token in zip(ids, tokens, strict=True)
            ])  # fmt: skip
            connection.execute(insert(Membership), [
                {"project_id": project, "user_id": uid, "role": "annotator", "created_at": now} for uid in ids
            ])  # fmt: skip
    finally:
        engine.dispose()
    return tokens
