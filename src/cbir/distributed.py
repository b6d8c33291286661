"""Describing images on a Ray cluster, for collections that outgrow one machine.

Ray Data splits the images into blocks and runs the extractor on every worker in the cluster
(or in a local Ray on this machine). Each worker rebuilds the extractor ONCE from the files its
`save(folder)` writes, shipped through the object store: that is the supported way to
reproduce a fitted extractor exactly (no pickled torch modules), so the vectors equal
`extractor.transform(images)`. Every block carries the positions of its images, and results
are placed back by position, so the order never depends on which worker finished first.

Extractors that read files named in their parameters (the `cnn` extractor's `weights`) need
those files at the same path on every node.

    describe_on_ray(extractor, images)                     # a local Ray, started and stopped
    describe_on_ray(extractor, images, address="auto")     # the cluster this node belongs to
    cbir index FOLDER -c COL --ray ray://head:10001        # see cbir.commands.ray_options
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from cbir.errors import CbirError
from cbir.features import Extractor, load_extractor

ADDRESS_ENV = "CBIR_RAY_ADDRESS"
LOCAL = "local"
DEFAULT_BATCH = 1024  # at most this many images per Ray Data block (one worker call)
CONNECT_TIMEOUT_S = 5.0  # Ray Client itself waits 30 s before giving up on a dead address
LOCAL_START_ATTEMPTS = 2
INSTALL_HINT = "install the ray extra: pip install 'cbir[ray]'"

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ray module with Ray Data, or a CbirError that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (the data extra: fails when only ray core is installed)
    except ImportError as error:
        raise CbirError(f"describing on Ray needs Ray Data ({error}); {INSTALL_HINT}") from None
    return ray


def resolve_address(address: str | None) -> str:
    """The address to use: the one given, else $CBIR_RAY_ADDRESS, else "local"."""
    return address or os.environ.get(ADDRESS_ENV) or LOCAL


def start_local_ray(ray: Any, num_cpus: int | None) -> None:
    """Start a Ray on this machine (for `--ray` and `cbir tune`), trying twice: on a busy
    machine its node can miss Ray's fixed 30 s startup deadline once (seen while search
    servers were starting)."""
    for attempt in range(1, LOCAL_START_ATTEMPTS + 1):
        try:
            ray.init(
                num_cpus=num_cpus,
                include_dashboard=False,
                log_to_driver=False,
                ignore_reinit_error=True,
            )
            return
        except Exception as error:  # Ray raises a bare Exception for a late node
            ray.shutdown()  # stops whatever half-started, so the retry starts clean
            if attempt == LOCAL_START_ATTEMPTS:
                raise CbirError(f"could not start a local Ray: {error}") from error
            log.warning("a local Ray did not start (%s); trying once more", error)


class RaySession:
    """A connection to Ray, made on first use. Stops Ray only when it started it itself:
    a cluster this process merely joined keeps running for its other users."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        self.address = resolve_address(address)
        self.num_cpus = num_cpus
        self._ray: Any = None
        self._started = False

    def connect(self) -> Any:
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if self.address != LOCAL:
            _check_reachable(self.address)
        if ray.is_initialized():  # someone in this process already set Ray up: use it as is
            self._ray = ray
            return ray
        if self.address == LOCAL:
            start_local_ray(ray, self.num_cpus)
            self._started = True
        else:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
                raise CbirError(
                    f"cannot connect to the Ray cluster at {self.address!r}: {error}"
                ) from None
        self._ray = ray
        return ray

    def close(self) -> None:
        if self._ray is not None and self._started:
            self._ray.shutdown()
        self._ray = None
        self._started = False

    def __enter__(self) -> RaySession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_reachable(address: str) -> None:
    """Fail in seconds, not Ray Client's 30 s, when nothing listens at host:port."""
    if address == "auto":
        return  # Ray finds the local cluster itself and fails at once when there is none
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        return  # let Ray judge addresses it has its own syntax for
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise CbirError(
            f"cannot reach the Ray cluster at {address!r} ({error}); start it with "
            f"`ray start --head`, or check the address (set --ray or ${ADDRESS_ENV})"
        ) from None


# --- the work -----------------------------------------------------------------------------------
def _saved_files(extractor: Extractor) -> dict[str, bytes]:
    """The extractor's saved folder as {relative path: bytes}: small, and exact to rebuild."""
    with tempfile.TemporaryDirectory(prefix="cbir-extractor-") as folder:
        extractor.save(Path(folder))
        return {
            str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(Path(folder).rglob("*"))
            if path.is_file()
        }


class _Describe:
    """Ray Data worker: rebuilds the extractor once, then describes block after block."""

    def __init__(self, files: list[Any]) -> None:
        import ray

        state = files[0]  # boxed, so Ray hands over the reference and this worker fetches it
        if isinstance(state, ray.ObjectRef):
            state = ray.get(state)
        # Kept for the worker's lifetime: an extractor may read its folder lazily.
        self._folder = tempfile.TemporaryDirectory(prefix="cbir-extractor-")
        root = Path(self._folder.name)
        for name, data in state.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        self.extractor = load_extractor(root)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(batch["image"], dtype=np.uint8)
        return {"position": batch["position"], "vector": self.extractor.transform(images)}


def _blocks(images: np.ndarray, batch_size: int) -> list[Any]:
    """Arrow tables of (position, image), one per block, so results can be put back in order."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    return [
        pa.table(
            {
                "position": pa.array(np.arange(start, min(start + batch_size, len(images)))),
                "image": ArrowTensorArray.from_numpy(images[start : start + batch_size]),
            }
        )
        for start in range(0, len(images), batch_size)
    ]


def _describe(
    ray: Any, extractor: Extractor, state: Any, images: np.ndarray, batch_size: int
) -> np.ndarray:
    out = np.empty((len(images), extractor.dim), dtype=np.float32)
    if len(images) == 0:
        return out
    ray.data.DataContext.get_current().enable_progress_bars = False  # cbir shows its own
    images = np.ascontiguousarray(images)
    extractor.transform(images[:0])  # shape, dtype and size errors here, not on a worker
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    # At least one block per CPU, so a pipeline batch keeps the whole cluster busy.
    blocks = _blocks(images, min(batch_size, -(-len(images) // cpus)))
    dataset = ray.data.from_arrow(blocks).map_batches(
        _Describe,
        fn_constructor_args=([state],),
        batch_size=None,  # one call per block: the blocks are already batch_size images
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(cpus, len(blocks))),
        num_cpus=1,
    )
    seen = 0
    for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        out[result["position"]] = result["vector"]
        seen += len(result["position"])
    if seen != len(images):  # a lost or repeated block would leave garbage rows
        raise CbirError(f"Ray returned {seen} vectors for {len(images)} images")
    return out


def describe_on_ray(
    extractor: Extractor,
    images: np.ndarray,
    address: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    num_cpus: int | None = None,
) -> np.ndarray:
    """`extractor.transform(images)`, computed on Ray workers, in the same order.

    `address`: None (then $CBIR_RAY_ADDRESS, else local), "local" (start a Ray on this
    machine with `num_cpus` CPUs, stopped again on return), "auto" or "ray://host:10001".
    """
    with RayDescriber(address, batch_size=batch_size, num_cpus=num_cpus) as describer:
        return describer(extractor, images)


class RayDescriber:
    """A describer for the indexing pipeline (`index_folder(..., describer=...)`): one Ray
    connection and one shipped copy of the extractor for all of a run's batches."""

    def __init__(
        self,
        address: str | None = None,
        batch_size: int = DEFAULT_BATCH,
        num_cpus: int | None = None,
    ) -> None:
        self.session = RaySession(address, num_cpus)
        self.batch_size = batch_size
        self._shipped: tuple[Extractor, Any] | None = None  # (extractor, its files' reference)
        atexit.register(self.close)

    def __call__(self, extractor: Extractor, images: np.ndarray) -> np.ndarray:
        ray = self.session.connect()
        if self._shipped is None or self._shipped[0] is not extractor:
            self._shipped = (extractor, ray.put(_saved_files(extractor)))
        return _describe(ray, extractor, self._shipped[1], images, self.batch_size)

    def close(self) -> None:
        self._shipped = None
        self.session.close()
        atexit.unregister(self.close)

    def __enter__(self) -> RayDescriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
