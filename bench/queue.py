"""Benchmark: the task-queue server's claims and submissions under concurrent clients, an open-loop load of
many annotators, and minimal baselines measured in the same run (``--parts``; all by default).

Configurations: SQLite with one server process; SQLite with two server processes on one data directory;
PostgreSQL 15 (a throwaway cluster, as the tests make it) behind one replica and behind two (clients split
across the two ports); each with `serve --workers 1` and `--workers 2` (`--workers`). Each gets a fresh data
directory and database.

Claims (``closed``): N clients (8, 32, 64), each one user (an annotator) with its own keep-alive HTTP
connection, loop ``claim`` → ``release``: every claim that counts obtains a task, and the release puts it
back, so the number of live leases stays at most N however long the run. Claims/s counts claims that
obtained a task, by their end time, in the steady windows; p50/p99 are of those claims' latency
(perf_counter around one request, client side). The load runs continuously: a warm-up, then ``--windows``
windows of ``--window-s`` seconds; each figure is the median over the windows.

Submissions (``submits``): 8 clients loop ``claim`` → ``submit`` of a 1 MiB segmentation (uint8 labelmap
128 x 128 x 64, NRRD raw encoding, so the 1 MiB is on the wire) on the case image's grid, each body unique
(a counter in 32 voxels) and sent with an Idempotency-Key. Cases have one reader and no review.

Open loop (``open``): ``--annotators`` (10,000) simulated annotators, each heartbeating its lease every 30 s
and submitting 1 MiB then claiming again every few minutes (``bench/queue_open.py``).

Baselines (``baselines``): a bare FastAPI endpoint, the claim SQL through sqlite3, and pgbench
(``bench/queue_baselines.py``).

Server CPU: psutil ``cpu_times`` of the server processes (and their worker children) at each window's
boundaries, as CPU seconds per 1,000 claims (each with its release) or submissions; PostgreSQL's own
backends are reported apart. On a small machine the load generator competes with the server for the CPUs;
CPU per 1,000 operations does not depend on that.

Run: ``.venv/bin/python -m bench.queue`` (about 20 minutes); ``--quick`` for a smoke run; one cell:
``--parts closed --configs sqlite-1 --clients 32 --workers 1``. Writes ``var/bench/queue.json`` and the
"Task queue" section of docs/benchmarks.md (other sections kept; ``--no-doc`` to leave it).
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import psutil

from bench import queue_baselines, queue_open
from bench.benchdoc import replace_section
from bench.queue_report import report
from Testing.server.harness import Api, ServerProcess, create_site_admin
from Testing.server.postgres import PostgresCluster

REPO = Path(__file__).resolve().parent.parent

SEG_SIZE = (128, 128, 64)  # i, j, k: 1 MiB of uint8
CONFIGS = {
    "sqlite-1": ("sqlite", 1),
    "sqlite-2": ("sqlite", 2),
    "postgresql-1": ("postgresql", 1),
    "postgresql-2": ("postgresql", 2),
}


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


# --- the load generator: processes of threads, one keep-alive connection per client --------------------


def _post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
    conn.request("POST", path, body, headers)
    response = conn.getresponse()
    return response.status, response.read()


def _claimer(client: dict, start_at: float, stop_at: float, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", client["port"], timeout=60)
    headers = {"Authorization": f"Bearer {client['token']}", "Content-Type": "application/json"}
    base = f"/api/v1/projects/{client['project']}/tasks"
    claims, releases, empty, errors = [], [], 0, []
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while True:
        began = time.perf_counter()
        if began > stop_at:
            break
        status, body = _post(conn, base + "/claim", b"{}", headers)
        ended = time.perf_counter()
        task = json.loads(body).get("task") if status == 200 else None
        if task is None:
            empty += status == 200
            if status != 200:
                errors.append(f"claim {status} {body[:200]!r}")
            continue
        claims.append((ended, ended - began))
        payload = json.dumps({"lease_id": task["lease_id"]}).encode()
        began = time.perf_counter()
        status, body = _post(conn, f"{base}/{task['id']}/release", payload, headers)
        ended = time.perf_counter()
        if status != 200:
            errors.append(f"release {status} {body[:200]!r}")
        releases.append((ended, ended - began))
    conn.close()
    out.append({"claims": claims, "releases": releases, "empty": empty, "errors": errors[:5]})


# the synthetic segmentation is one liver box: the protocol's other required organs are missing
OVERRIDES = [
    {"structure": s, "reason": "synthetic benchmark segmentation"}
    for s in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "aorta")
]


def _multipart(boundary: str, lease_id: str, seg: bytes) -> bytes:
    metadata_json = json.dumps({"time_spent_s": 1.0, "client": "bench/queue.py", "overrides": OVERRIDES})
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="lease_id"\r\n\r\n{lease_id}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n{metadata_json}\r\n'.encode(),
        f'--{boundary}\r\nContent-Disposition: form-data; name="segmentation"; filename="reader.seg.nrrd"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode(),
        seg,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def _submitter(client: dict, start_at: float, stop_at: float, out: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", client["port"], timeout=120)
    auth = {"Authorization": f"Bearer {client['token']}"}
    base = f"/api/v1/projects/{client['project']}/tasks"
    seg = bytearray(client["seg"])
    boundary = "benchqueue" + os.urandom(8).hex()
    submits, claims, errors, wire = [], [], [], 0
    counter = client["index"] << 20
    while time.monotonic() < start_at:
        time.sleep(0.001)
    while time.perf_counter() < stop_at:
        began = time.perf_counter()
        status, body = _post(conn, base + "/claim", b"{}", {**auth, "Content-Type": "application/json"})
        claims.append((time.perf_counter(), time.perf_counter() - began))
        task = json.loads(body).get("task") if status == 200 else None
        if task is None:
            errors.append(f"claim {status} {body[:200]!r}")
            break
        counter += 1
        seg[-32:] = bytes((counter >> bit) & 1 for bit in range(32))  # unique content, labels 0/1 only
        payload = _multipart(boundary, task["lease_id"], bytes(seg))
        headers = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Idempotency-Key": f"bench-{counter}"}  # fmt: skip
        began = time.perf_counter()
        status, body = _post(conn, f"{base}/{task['id']}/submissions", payload, headers)
        ended = time.perf_counter()
        if status != 201:
            errors.append(f"submit {status} {body[:200]!r}")
            continue
        submits.append((ended, ended - began))
        wire += len(payload)
    conn.close()
    out.append({"claims": claims, "submits": submits, "wire_bytes": wire, "errors": errors[:5]})


def _generator(clients: list[dict], mode: str, start_at: float, stop_at: float, queue) -> None:
    out: list = []
    target = _claimer if mode == "claims" else _submitter
    threads = [threading.Thread(target=target, args=(c, start_at, stop_at, out)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(out)


# --- CPU accounting -----------------------------------------------------------------------------------


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their (live) descendants."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for proc in [process, *process.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def postmaster_pid(cluster: PostgresCluster | None) -> list[int]:
    if cluster is None:
        return []
    pid_file = cluster.root / "data" / "postmaster.pid"
    return [int(pid_file.read_text().split()[0])]


# --- one configuration --------------------------------------------------------------------------------


class Setup:
    """A fresh queue: servers, a site admin, a project with one-reader cases, and 64 annotators."""

    def __init__(self, root: Path, config: str, cluster: PostgresCluster | None, extra: list[str], tag: str = ""):
        backend, replicas = CONFIGS[config]
        self.root = root / f"{config}{tag}"
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True)
        self.cluster = cluster if backend == "postgresql" else None
        self.url = self.cluster.create_database() if self.cluster else None
        token = create_site_admin(self.data_dir, self.url)
        self.servers = [ServerProcess(self.data_dir, self.url, None, "--log-level", "warning", *extra)
                        for _ in range(replicas)]  # fmt: skip
        for server in self.servers:
            server.start()
        self.admin = Api(self.servers[0].url, token, "admin")
        self.users: list[Api] = []

    def project(self, name: str, image: Path, cases: int, users: int = 64) -> int:
        admin = self.admin
        project = admin.new_project(name, readers=1, review=False)
        sha = admin.upload_image(project, image)["sha256"]
        for start in range(0, cases, 5000):
            batch = [{"name": f"c{i:06d}", "image_sha256": sha} for i in range(start, min(cases, start + 5000))]
            admin.ok(admin.post(f"/api/v1/projects/{project}/cases/bulk", json={"cases": batch}), 201)
        for index in range(users):
            if len(self.users) <= index:
                self.users.append(admin.new_user(f"reader{index:02d}"))
            admin.set_roles(project, self.users[index].name, "annotator")
        return project

    def pids(self) -> list[int]:
        return [server.process.pid for server in self.servers]

    def stop(self) -> None:
        self.admin.close()
        for user in self.users:
            user.close()
        for server in self.servers:
            server.stop()


def run_load(setup: Setup, project: int, mode: str, n_clients: int, args, seg: bytes = b"") -> dict:
    """Run the load; sample CPU at window boundaries; per-window figures and their medians."""
    procs = max(1, min(args.generators, n_clients))
    clients = [{"index": i, "port": setup.servers[i % len(setup.servers)].port, "token": setup.users[i].token,
                "project": project, "seg": seg} for i in range(n_clients)]  # fmt: skip
    warm, length, windows = args.warmup_s, args.window_s, args.windows
    start_at = time.monotonic() + 1.0
    bounds = [start_at + warm + i * length for i in range(windows + 1)]
    stop_at = bounds[-1] + 0.05
    # perf_counter and monotonic are the same clock on Linux (CLOCK_MONOTONIC); checked here
    assert abs(time.perf_counter() - time.monotonic()) < 1.0
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_generator, args=(clients[p::procs], mode, start_at, stop_at, queue))
               for p in range(procs)]  # fmt: skip
    for worker in workers:
        worker.start()
    server_cpu, pg_cpu, gen_cpu = [], [], []
    pg = postmaster_pid(setup.cluster)
    for bound in bounds:
        time.sleep(max(0.0, bound - time.monotonic()))
        server_cpu.append(cpu_seconds(setup.pids()))
        pg_cpu.append(cpu_seconds(pg))
        gen_cpu.append(cpu_seconds([w.pid for w in workers]))
    results = [item for _ in workers for item in queue.get(timeout=300)]
    for worker in workers:
        worker.join(timeout=60)
    key = "claims" if mode == "claims" else "submits"
    events = sorted(event for result in results for event in result[key])
    errors = [error for result in results for error in result["errors"]]
    per_window = []
    for i in range(windows):
        lo, hi = bounds[i], bounds[i + 1]
        latencies = np.array([lat for end, lat in events if lo <= end < hi])
        count = len(latencies)
        row = {
            "ops": count,
            "ops_per_s": count / length,
            "p50_ms": float(np.percentile(latencies, 50) * 1000) if count else None,
            "p99_ms": float(np.percentile(latencies, 99) * 1000) if count else None,
            "server_cpu_s_per_1000": (server_cpu[i + 1] - server_cpu[i]) / count * 1000 if count else None,
            "postgres_cpu_s_per_1000": (pg_cpu[i + 1] - pg_cpu[i]) / count * 1000 if count and pg else None,
            "generator_cpu_s_per_1000": (gen_cpu[i + 1] - gen_cpu[i]) / count * 1000 if count else None,
            "server_cpu_util": (server_cpu[i + 1] - server_cpu[i]) / length,
        }
        per_window.append(row)
    summary = {name: _median([w[name] for w in per_window]) for name in per_window[0]}
    summary.update(clients=n_clients, windows=per_window, errors=errors[:10],
                   empty_claims=sum(r.get("empty", 0) for r in results))  # fmt: skip
    if mode == "submits":
        wire = sum(r["wire_bytes"] for r in results)
        total = sum(len(r["submits"]) for r in results)
        summary["mib_per_s"] = summary["ops_per_s"] * (wire / max(total, 1)) / 2**20
        summary["bytes_per_submission"] = wire / max(total, 1)
    return summary


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- data ---------------------------------------------------------------------------------------------


def make_files(tmp: Path) -> tuple[Path, Path, bytes]:
    """A small image for the claim projects, a 128x128x64 image and its raw 1 MiB segmentation."""
    import SimpleITK as sitk

    from MedAnnotAssistLib.core.labelio import Geometry, write_seg_nrrd, write_volume
    from MedAnnotAssistLib.core.protocol import bundled_protocol

    direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    small = write_volume(tmp / "small.nii.gz", np.zeros((6, 10, 12), np.int16), Geometry((12, 10, 6), (2.0, 2.0, 3.0),
                         (0.0, 0.0, 0.0), direction))  # fmt: skip
    geometry = Geometry(SEG_SIZE, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), direction)
    rng = np.random.default_rng(3)
    big = write_volume(tmp / "big.nii.gz", rng.integers(-100, 200, SEG_SIZE[::-1]).astype(np.int16), geometry)
    protocol = bundled_protocol("abdominal-organs")
    labels = np.zeros(SEG_SIZE[::-1], np.uint8)
    labels[10:50, 30:90, 30:100] = 1
    seg = write_seg_nrrd(tmp / "gz.seg.nrrd", labels, geometry, [(1, protocol.structure("liver"))], protocol)
    raw = tmp / "raw.seg.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(seg)), str(raw), useCompression=False)
    data = raw.read_bytes()
    assert b"encoding: raw" in data and len(data) > 2**20, "expected a raw 1 MiB segmentation"
    return small, big, data


def _add_baseline(results: dict, args) -> None:
    if args.baseline:
        results["baseline"] = json.loads(args.baseline.read_text())
        results["baseline"]["meta"]["label"] = args.baseline_label or str(args.baseline)


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, {memory:.1f} GiB RAM, "
            f"{platform.system()}, Python {platform.python_version()}")  # fmt: skip


PARTS = ("closed", "submits", "open", "baselines")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=3.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--generators", type=int, default=2, help="load-generator processes")
    parser.add_argument("--submit-clients", type=int, default=8)
    parser.add_argument("--submit-configs", default="sqlite-1,postgresql-2")
    parser.add_argument("--workers", default="1,2", help="`serve --workers` values to run each configuration with")
    parser.add_argument("--serve-args", default="", help="extra `medannot serve` options, e.g. '--durability relaxed'")
    parser.add_argument("--open-configs", default="sqlite-1", help="configurations of the open-loop run")
    parser.add_argument("--open-workers", type=int, default=1, help="open loop: `serve --workers`")
    parser.add_argument("--annotators", type=int, default=10_000, help="open loop: simulated annotators")
    parser.add_argument("--work-s", type=float, default=300.0, help="open loop: mean seconds between submissions")
    parser.add_argument("--heartbeat-s", type=float, default=30.0, help="open loop: seconds between heartbeats")
    parser.add_argument("--open-s", type=float, default=60.0, help="open loop: seconds measured")
    parser.add_argument("--open-warmup-s", type=float, default=10.0, help="open loop: seconds before measuring")
    parser.add_argument("--baseline-s", type=float, default=5.0, help="seconds per baseline")
    parser.add_argument("--quick", action="store_true",
                        help="one window per cell, 2,000 annotators for 20 s, 2 s baselines (a smoke run)")  # fmt: skip
    parser.add_argument("--baseline", type=Path, help="a JSON of this bench from older code, shown as 'before'")
    parser.add_argument("--baseline-label", default="", help="what the baseline ran (shown in its heading)")
    parser.add_argument("--from-json", action="store_true", help="no run: rewrite the section from --json")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=REPO / "var" / "bench" / "queue.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.annotators, args.open_s, args.open_warmup_s, args.baseline_s = 1, 2000, 20.0, 5.0, 2.0
    args.overrides = OVERRIDES
    parts = {part for part in args.parts.split(",") if part}
    configs = [c for c in args.configs.split(",") if c] if "closed" in parts else []
    submit_configs = [c for c in args.submit_configs.split(",") if c] if "submits" in parts else []
    open_configs = [c for c in args.open_configs.split(",") if c] if "open" in parts else []
    counts = [int(c) for c in args.clients.split(",")]
    extra = args.serve_args.split()
    worker_counts = [int(w) for w in args.workers.split(",") if w]
    if args.from_json:
        saved = json.loads(args.json.read_text())
        _add_baseline(saved, args)
        replace_section(args.doc, report(saved, saved["meta"], argparse.Namespace(**saved["meta"]["args"])))
        return
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    results: dict = {"claims": {}, "submits": {}, "open": {}}
    cluster = None
    with tempfile.TemporaryDirectory(prefix="medannot-bench-queue-") as tmp:
        tmp = Path(tmp)
        small, big, seg = make_files(tmp)
        try:
            wanted = configs + submit_configs + open_configs
            if any(CONFIGS[c][0] == "postgresql" for c in wanted) or "baselines" in parts:
                cluster = PostgresCluster().start()
            for config in dict.fromkeys(configs + submit_configs):
                for workers in worker_counts:
                    _run_config(config, workers, configs, submit_configs, counts, tmp, cluster, extra, small,
                                big, seg, results, args, started)  # fmt: skip
            for config in open_configs:
                _run_open(config, tmp, cluster, extra, big, seg, results, args, started)
            if "baselines" in parts:
                results["baselines"] = _run_baselines(tmp, cluster, args, started)
        finally:
            if cluster is not None:
                cluster.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    names = ("fastapi", "starlette", "uvicorn", "SQLAlchemy", "psycopg", "pydantic", "httptools", "uvloop")
    pg_bin = Path(os.environ.get("MEDANNOT_PG_BIN", "/usr/lib/postgresql/15/bin"))
    pg_version = subprocess.run([str(pg_bin / "postgres"), "--version"], capture_output=True, text=True).stdout.strip()
    import sqlite3

    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "load_start": f"{load_start:.1f}",
        "load_end": f"{os.getloadavg()[0]:.1f}",
        "versions": ", ".join(f"{n} {version(n)}" for n in names) + f", SQLite {sqlite3.sqlite_version}, {pg_version}",
        "commit": commit.stdout.strip() or "?",
        "server": "`" + " ".join(["medannot serve --log-level warning", *extra, "--workers N"]) + "`",
        "minutes": (time.perf_counter() - started) / 60,
        "args": vars(args) | {"doc": str(args.doc), "json": str(args.json)},
    }
    _add_baseline(results, args)
    section = report(results, meta, args)
    print(section)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, **{k: v for k, v in results.items() if k != "baseline"}},
                                    indent=2, default=str))  # fmt: skip
    if not args.no_doc:
        replace_section(args.doc, section)


def _say(started: float, text: str) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {text}", flush=True)


def _run_config(config, workers, configs, submit_configs, counts, tmp, cluster, extra, small, big, seg, results, args,
                started) -> None:  # fmt: skip
    label = f"{config}, {workers} worker{'s' if workers > 1 else ''}"
    workers_option = ["--workers", str(workers)] if workers > 1 else []
    setup = Setup(tmp, config, cluster, [*extra, *workers_option], f"w{workers}")
    try:
        if config in configs:
            project = setup.project("claims", small, 2000)
            for n in counts:
                _say(started, f"{label}: {n} clients")
                row = run_load(setup, project, "claims", n, args)
                results["claims"].setdefault(label, []).append(row)
                print(f"    {_fmt(row['ops_per_s'], 0)} claims/s, p50 {_fmt(row['p50_ms'])} ms, p99 "
                      f"{_fmt(row['p99_ms'])} ms, server {_fmt(row['server_cpu_s_per_1000'], 2)} "
                      f"CPU s/1000 {row['errors'][:2]}", flush=True)  # fmt: skip
        if config in submit_configs:
            _say(started, f"{label}: submissions")
            project = setup.project("submits", big, 3000)
            row = run_load(setup, project, "submits", args.submit_clients, args, seg)
            results["submits"][label] = row
            print(f"    {_fmt(row['ops_per_s'])} submissions/s, {_fmt(row['mib_per_s'])} MiB/s, "
                  f"p50 {_fmt(row['p50_ms'])} ms, p99 {_fmt(row['p99_ms'])} ms {row['errors'][:2]}",
                  flush=True)  # fmt: skip
    finally:
        setup.stop()


def _run_open(config, tmp, cluster, extra, big, seg, results, args, started) -> None:
    _say(started, f"{config}, {args.open_workers} worker(s): open loop, {args.annotators:,} annotators")
    workers = ["--workers", str(args.open_workers)] if args.open_workers > 1 else []
    setup = Setup(tmp, config, cluster, [*extra, *workers], "open")
    try:
        submissions = int(args.annotators / args.work_s * (args.open_s + args.open_warmup_s) * 1.5) + 100
        project = setup.project("open", big, args.annotators + submissions, users=0)
        url = setup.url or f"sqlite:///{setup.data_dir / 'queue.sqlite3'}"
        tokens = queue_open.add_annotators(url, project, args.annotators)
        pg = postmaster_pid(setup.cluster)

        def cpu():
            return cpu_seconds(setup.pids()), cpu_seconds(pg), time.monotonic()

        ports = [server.port for server in setup.servers]
        row = queue_open.run_open_loop(ports, project, tokens, seg, args, cpu)
        results["open"][config] = row
        for kind, item in row["kinds"].items():
            print(f"    {kind}: {_fmt(item['per_s'])}/s, p50 {_fmt(item['p50_ms'])} ms, p99 {_fmt(item['p99_ms'])} ms, "
                  f"failed {item['failed']}", flush=True)  # fmt: skip
        print(f"    errors: {row['errors'][:3]}", flush=True)
    finally:
        setup.stop()


def _run_baselines(tmp, cluster, args, started) -> dict:
    from Testing.server.postgres import free_port

    out = {}
    _say(started, "baseline: bare endpoint, 32 clients")
    bare = queue_baselines.BareServer(tmp, free_port())
    try:
        setup = SimpleNamespace(servers=[SimpleNamespace(port=bare.port)], users=[SimpleNamespace(token="x")] * 32,
                                pids=bare.pids, cluster=None)  # fmt: skip
        out["bare"] = run_load(setup, 1, "claims", 32, args)
        print(f"    {_fmt(out['bare']['ops_per_s'], 0)} claims/s, p99 {_fmt(out['bare']['p99_ms'])} ms", flush=True)
    finally:
        bare.stop()
    _say(started, "baseline: raw SQL on SQLite")
    out["raw_sql"] = queue_baselines.raw_sql(args.baseline_s)
    _say(started, "baseline: pgbench")
    out["pgbench"] = queue_baselines.pgbench(cluster, max(args.baseline_s, 5.0))
    for row in out["raw_sql"] + out["pgbench"]:
        print(f"    {row['label']}: {_fmt(row['claims_per_s'], 0)} claims/s", flush=True)
    return out


def _fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


if __name__ == "__main__":
    main()
