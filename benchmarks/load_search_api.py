"""Load test of `cbir serve` on 127.0.0.1: concurrent clients for a bounded time, three scenarios.

Starts `cbir serve` on a collection as a child process (stopped by its PID at the end, even on
error), then runs client threads, each with its own keep-alive connection, for --duration
seconds (at most 60), and prints and saves p50/p90/p99 latency per kind of request, the status
codes seen and every error.

  --scenario mix      (default) --clients threads alternate a 32x32 PNG upload (POST
                      /api/search) and a "more like this" search by id (GET /api/search?id=).
                      `--index-during SOURCE` runs `cbir index SOURCE` into the collection
                      meanwhile.
  --scenario writer   the issue-22 check: on a temporary copy of the collection, `cbir index
                      SOURCE` (--index-during, e.g. cifar10:test, a commit per image; run
                      again each time it ends before the clients do) holds the writer lock
                      for the whole run; 4 clients keep sending POST /api/images (each
                      refused 503 with Retry-After while the lock is held, or added), and
                      --clients (16) readers send uploads, searches by id and /api/health
                      in turn. Targets: 0 errors, search p99 < 150 ms, health p99 < 50 ms.
  --scenario costly   six clients send maximum-size images back to back, ignoring Retry-After
                      (three a flat 6300x6300 PNG, 39.7 megapixels in a few hundred KB; three
                      a noisy PNG just under the upload limit), while 2 clients search with
                      normal 32x32 images and one asks /api/health every 50 ms. Targets:
                      health p99 < 100 ms, normal searches p99 < 250 ms, 0 errors (a costly
                      image answered 503 with Retry-After is the server protecting itself,
                      counted apart, not an error).

    .venv/bin/cbir index cifar10 -c runs/cifar10-hog -e hog --data /work/shared/data  # once
    .venv/bin/python benchmarks/load_search_api.py --collection runs/cifar10-hog
    .venv/bin/python benchmarks/load_search_api.py --collection runs/cifar10-hog \\
        --scenario writer --index-during cifar10:test --data /work/shared/data --duration 30 \\
        --baseline
    .venv/bin/python benchmarks/load_search_api.py --collection runs/cifar10-hog \\
        --scenario costly --duration 30 --baseline

Clients and server share the machine's cores: the figures are for both on 2 cores, and the load
average (other work on the machine) is recorded beside them.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import io
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from cbir.collection import LOCK_FILE, Collection
from cbir.speed.measure import save_result

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, only benchmarks/ is on sys.path: the repository root is added for the server
# process and HTTP client of tests/support (test helpers, kept out of the cbir package).
sys.path.insert(0, str(ROOT))
from tests.support.http_client import Client, multipart  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MAX_DURATION_S = 60.0
REQUEST_TIMEOUT_S = 60.0
LOCK_WAIT_S = 60.0  # for the indexer to take the writer lock
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
PNG_HEADER_END = 33  # signature (8) + IHDR chunk (25): where another chunk may go
NONCE_BYTES = 16
MAX_PIXELS_SIDE = 6300  # 39.7 M pixels: just under cbir serve's 40 M limit
UPLOAD_LIMIT = 16 * 2**20
sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_latency import query_images  # noqa: E402  (the latency benchmark's query images)


@dataclass(frozen=True)
class Ask:
    """One request a client sends, and whether its answer is an error."""

    kind: str  # what the figures are grouped by
    method: str
    path: str
    body: bytes | bytearray | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fine: tuple[int, ...] = (200,)  # statuses that are no error (a 503 needs Retry-After)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.errors: list[str] = []

    def record(self, kind: str, seconds: float, status: int | str, error: str | None) -> None:
        with self.lock:
            self.statuses[kind][str(status)] += 1
            if error is None:
                self.latencies[kind].append(seconds)
            else:
                self.errors.append(f"{kind}: {error}")

    def figures(self) -> dict[str, dict]:
        out = {}
        for kind in sorted(self.statuses):
            ms = np.array(self.latencies[kind]) * 1000.0
            out[kind] = {
                "answered": len(ms),
                "statuses": dict(self.statuses[kind]),
                "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 90, 99)}
                if len(ms)
                else {},
            }
        return out


def client_loop(
    url: str, asks: Callable[[int], Ask], deadline: float, tally: Tally, pause_s: float = 0.0
) -> None:
    with Client(url, timeout=REQUEST_TIMEOUT_S) as client:
        turn = 0
        while time.monotonic() < deadline:
            ask = asks(turn)
            turn += 1
            started = time.perf_counter()
            status: int | str = "failed"
            try:
                reply = client.request(ask.method, ask.path, ask.body, ask.headers)
                status = reply.status
                error = _judge(ask, reply.status, reply.headers, reply.body)
            except Exception as failure:  # every failure is counted and reported
                error = f"{type(failure).__name__}: {failure}"
            tally.record(ask.kind, time.perf_counter() - started, status, error)
            if pause_s:
                time.sleep(pause_s)


def _judge(ask: Ask, status: int, headers: dict[str, str], body: bytes) -> str | None:
    if status == 503 and 503 in ask.fine and "Retry-After" not in headers:
        return "503 without Retry-After"
    if status not in ask.fine:
        return f"HTTP {status}: {body[:160]!r}"
    return None


def upload_ask(kind: str, data: bytes, k: int, fine: tuple[int, ...] = (200,)) -> Ask:
    body, content_type = multipart({"k": str(k)}, {"image": ("query.png", data)})
    return Ask(kind, "POST", "/api/search", body, {"Content-Type": content_type}, fine)


def searches(uploads: list[bytes], ids: list[str], k: int, seed: int, health: bool):
    """Uploads and searches by id in turn (and /api/health every third request)."""
    rng = np.random.default_rng(seed)

    def ask(turn: int) -> Ask:
        if health and turn % 3 == 2:
            return Ask("health", "GET", "/api/health")
        if turn % 2:
            return upload_ask("search", uploads[rng.integers(len(uploads))], k)
        image_id = ids[rng.integers(len(ids))]
        return Ask("search", "GET", f"/api/search?k={k}&id={quote(image_id, safe='')}")

    return ask


def writes(seed: int):
    """New images to add, each refused (503) while another process writes, or added (201)."""
    images = query_images(400, seed=1000 + seed)

    def ask(turn: int) -> Ask:
        body, content_type = multipart({"label": "load"}, {"image": ("w.png", images[turn])})
        headers = {"Content-Type": content_type}
        return Ask("write", "POST", "/api/images", body, headers, fine=(201, 503))

    return ask


def costly_images() -> dict[str, bytes]:
    """The two kinds of maximum-size image: most pixels, most bytes."""
    ramp = np.linspace(0, 255, MAX_PIXELS_SIDE, dtype=np.float32)
    flat = np.stack([np.broadcast_to(ramp, (MAX_PIXELS_SIDE, MAX_PIXELS_SIDE))] * 3, axis=-1)
    most_pixels = _png(flat.astype(np.uint8))
    side = int(((UPLOAD_LIMIT - 64 * 1024) / 3) ** 0.5)  # noise does not compress: ~3 B/pixel
    noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    most_bytes = _png(noise)
    while len(most_bytes) > UPLOAD_LIMIT - 64 * 1024:
        side -= 16
        most_bytes = _png(noise[:side, :side])
    return {"most_pixels": most_pixels, "most_bytes": most_bytes}


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


class KeepWriting:
    """cbir index, run again each time it ends until the clients stop, so that it holds the
    collection for as long as they run: the first run adds SOURCE's images; a later one finds
    them indexed (it still reads and checks each, holding the writer lock)."""

    def __init__(self, first: subprocess.Popen, command: list[str], env: dict, until: float):
        self.command, self.env, self.until = command, env, until
        self.runs = [first]
        self.said: list[str] = []  # each ended run's last words
        self.first_run_s: float | None = None
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            run = self.runs[-1]
            output = run.communicate()[0] or ""
            self.said.append(f"exit {run.returncode}: {output.strip()[-300:]}")
            if self.first_run_s is None:
                self.first_run_s = time.monotonic() - self._started
            if time.monotonic() >= self.until:
                return
            self.runs.append(
                subprocess.Popen(
                    self.command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    env=self.env,
                )  # fmt: skip
            )

    def finish(self, timeout: float) -> bool:
        """Wait for the last run; True when it was still writing as the clients stopped."""
        running = self.runs[-1].poll() is None
        self._thread.join(timeout)
        self.kill()
        return running

    def kill(self) -> None:
        for run in self.runs:
            if run.poll() is None:
                run.kill()


def wait_for_writer(collection: Path, process: subprocess.Popen) -> float:
    """Seconds until the indexer holds the writer lock (its pid is in the lock file)."""
    started = time.monotonic()
    while time.monotonic() - started < LOCK_WAIT_S:
        if process.poll() is not None:
            raise SystemExit(f"cbir index ended early: {process.communicate()[0][-2000:]}")
        holder = (collection / LOCK_FILE).read_text(errors="replace").split(" ", 1)[0]
        if holder == str(process.pid):
            return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit("cbir index never took the writer lock")


def run_clients(loops: list[tuple[Callable[[int], Ask], float]], url: str, duration: float):
    tally = Tally()
    deadline = time.monotonic() + duration
    threads = [
        threading.Thread(target=client_loop, args=(url, asks, deadline, tally, pause))
        for asks, pause in loops
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + REQUEST_TIMEOUT_S + 5)
    return tally, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--scenario", choices=("mix", "writer", "costly"), default="mix")
    parser.add_argument("--clients", type=int, default=16, help="searching clients")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds, at most 60")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, help=f"JSON file (default {RESULTS}/...)")
    parser.add_argument("--threads", type=int, default=16, help="server request threads")
    parser.add_argument(
        "--index-during", metavar="SOURCE",
        help="run `cbir index SOURCE` into the collection during the load (a folder, or "
        "cifar10:test); the writer scenario needs it",
    )  # fmt: skip
    parser.add_argument("--data", help="CIFAR-10's folder, passed to cbir index")
    parser.add_argument(
        "--batch-size", type=int, default=1,
        help="cbir index's commit size (small: many commits, and a run long enough to hold "
        "the lock for 30 s)",
    )  # fmt: skip
    parser.add_argument(
        "--indexer-nice", type=int, default=0, metavar="N",
        help="run cbir index under `nice -n N` (how a machine that serves runs bulk indexing: "
        "the server's requests go first when both want the cores)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", action="store_true",
        help="first run the scenario's readers alone for as long, on the same server (writer, "
        "costly): the side-by-side figures under the machine's load of the moment",
    )  # fmt: skip
    args = parser.parse_args()
    duration = min(max(args.duration, 1.0), MAX_DURATION_S)
    if args.scenario == "writer" and not args.index_during:
        parser.error("--scenario writer needs --index-during SOURCE (e.g. cifar10:test)")
    out = args.out or RESULTS / (
        "load_search_api.json" if args.scenario == "mix" else f"load_{args.scenario}.json"
    )

    with Collection.open(args.collection, read_only=True) as collection:
        ids = sorted(collection.known_ids())[:: max(1, len(collection) // 2000)]
    uploads = query_images(200)
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARIABLES}
    scratch = None
    served = args.collection
    if args.scenario == "writer":  # the indexer and the writes change it: work on a copy
        scratch = Path(tempfile.mkdtemp(prefix="cbir-load-"))
        served = Path(shutil.copytree(args.collection, scratch / "collection"))
    extra = ("--threads", str(args.threads)) + (
        ("--allow-writes",) if args.scenario == "writer" else ()
    )
    load_before = os.getloadavg()
    indexer = None
    lock_taken_s = indexer_started = None
    writing: KeepWriting | None = None
    indexer_running_at_end = False
    baseline = None
    try:
        with ServerProcess(served, env=env, extra_args=extra) as server:
            count_before = health_count(server.url)
            probes, pressure = client_loops(args, uploads, ids)
            if args.baseline:
                alone, alone_s = run_clients(probes, server.url, duration)
                baseline = {
                    "duration_s": round(alone_s, 1),
                    "by_kind": alone.figures(),
                    "errors": len(alone.errors),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                }
            if args.index_during:
                command = [
                    *(("nice", "-n", str(args.indexer_nice)) if args.indexer_nice else ()),
                    sys.executable, "-m", "cbir.cli", "-q", "index", args.index_during,
                    "-c", str(served), "--batch-size", str(args.batch_size),
                    *(("--data", args.data) if args.data else ()),
                ]  # fmt: skip
                indexer = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
                )
                lock_taken_s = wait_for_writer(served, indexer)
                indexer_started = time.monotonic()
                writing = KeepWriting(indexer, command, env, indexer_started + duration)
            tally, elapsed = run_clients(probes + pressure, server.url, duration)
            if writing is not None:
                indexer_running_at_end = writing.finish(timeout=180)
            count_after = health_count(server.url)
            server_cpu_s = process_cpu_seconds(server.pid)
            server_alive = server.alive()
            server_log = [line for line in server.output if "refused" in line][:3]
    finally:
        if writing is not None:
            writing.kill()
        elif indexer is not None and indexer.poll() is None:
            indexer.kill()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    figures = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "scenario": args.scenario,
        "collection": str(args.collection),
        "images_before_after": [count_before, count_after],
        "clients": describe_clients(args),
        "server_threads": args.threads,
        "duration_s": round(elapsed, 1),
        "by_kind": tally.figures(),
        "baseline_readers_alone": baseline,
        "errors": len(tally.errors),
        "error_examples": tally.errors[:10],
        "index_during": args.index_during,
        "indexer_nice": args.indexer_nice if args.index_during else None,
        "indexer_took_lock_after_s": None if lock_taken_s is None else round(lock_taken_s, 2),
        "indexer_still_writing_at_end": indexer_running_at_end if indexer else None,
        # The first run adds SOURCE's images; when it ends before the clients do, cbir index
        # runs again (finding them indexed, it reads and checks them, holding the lock).
        "indexer_runs": len(writing.runs) if writing else None,
        "indexer_first_run_s": round(writing.first_run_s, 1)
        if writing and writing.first_run_s
        else None,
        "indexer_output": writing.said if writing else None,
        "server_log_examples": server_log,
        "server_alive_at_end": server_alive,
        # Where the 2 cores went: the server, and these clients (the same machine).
        "cpu_s": {"server": server_cpu_s, "clients": round(sum(os.times()[:2]), 1)},
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures, indent=2))
    save_result(out, figures)
    if tally.errors:
        sys.exit(1)


def client_loops(args, uploads: list[bytes], ids: list[str]) -> tuple[list, list]:
    """(probes, pressure): the readers whose latency is the figure, and the clients that load
    the server; each a list of (request maker, pause between requests)."""
    with_health = args.scenario == "writer"
    readers = 2 if args.scenario == "costly" else args.clients
    probes = [(searches(uploads, ids, args.k, s, with_health), 0.0) for s in range(readers)]
    if args.scenario == "mix":
        return probes, []
    if args.scenario == "writer":
        return probes, [(writes(seed), 0.25) for seed in range(4)]
    probes.append((lambda turn: Ask("health", "GET", "/api/health"), 0.05))
    heavy = [
        (costly_upload(f"costly_{name}", data, args.k), 0.0)
        for name, data in costly_images().items()
        for _ in range(3)
    ]
    return probes, heavy


def costly_upload(kind: str, data: bytes, k: int) -> Callable[[int], Ask]:
    """The same pixels, new bytes each time (a comment chunk with a nonce), as an attacker
    would send them: the server's memory of described images cannot spare the decoding. The
    body is built once per client and only its nonce rewritten in place: an attacker's CPU is
    not on the server's machine, these clients' should weigh on it as little as it can."""
    placeholder = b"n" * NONCE_BYTES
    note = b"nonce\x00" + placeholder
    chunk = struct.pack(">I", len(note)) + b"tEXt" + note + b"\0\0\0\0"
    ask = upload_ask(kind, data[:PNG_HEADER_END] + chunk + data[PNG_HEADER_END:], k, (200, 503))
    body = bytearray(ask.body or b"")
    at = body.index(placeholder)  # the nonce, then the chunk's CRC

    def next_ask(turn: int) -> Ask:
        nonce = os.urandom(NONCE_BYTES // 2).hex().encode()
        body[at : at + NONCE_BYTES] = nonce
        crc = zlib.crc32(b"tEXt" + b"nonce\x00" + nonce) & 0xFFFFFFFF
        body[at + NONCE_BYTES : at + NONCE_BYTES + 4] = struct.pack(">I", crc)
        return Ask(kind, "POST", "/api/search", body, ask.headers, ask.fine)

    return next_ask


def describe_clients(args) -> str:
    if args.scenario == "mix":
        return f"{args.clients} alternating upload and by-id searches, k={args.k}"
    if args.scenario == "writer":
        return (
            f"{args.clients} readers (upload search, by-id search, /api/health in turn) and 4 "
            "writers (POST /api/images, 0.25 s apart) while cbir index holds the writer lock"
        )
    return (
        "6 costly clients back to back (3 with a 6300x6300 PNG, 3 with a noisy PNG under "
        "16 MiB), 2 normal search clients, 1 /api/health every 50 ms"
    )


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds a running process has used (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def health_count(url: str) -> int:
    with Client(url) as client:
        return client.request("GET", "/api/health").json()["images"]


if __name__ == "__main__":
    main()
