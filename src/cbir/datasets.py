"""Datasets: CIFAR-10 (official python tarball or batches, or the JPEG mirror) and image folders.

CIFAR-10 is found, in this order, through `--data DIR`, the CBIR_DATA_DIR environment variable and
the user cache folder; in each folder we accept the official `cifar-10-python.tar.gz`, its extracted
`cifar-10-batches-py/`, the JPEG mirror `cifar10-jpeg.tar.gz` or its extracted `cifar10-jpeg/`.
With none of them the official tarball is downloaded (md5-verified) into the cache folder.
Decoded arrays are cached as .npz so that a second run starts at once.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbir.errors import ChecksumError, DataNotFoundError
from cbir.images import IMAGE_SUFFIXES, decode_many
from cbir.storage import atomic_write_bytes

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
OFFICIAL_TARBALL = "cifar-10-python.tar.gz"
OFFICIAL_FOLDER = "cifar-10-batches-py"
MIRROR_TARBALL = "cifar10-jpeg.tar.gz"
MIRROR_FOLDER = "cifar10-jpeg"
CACHE_FORMAT = 1  # bump when the cached arrays change meaning

Progress = Callable[[int], None]


@dataclass
class Dataset:
    """Images with stable string ids and, when known, integer labels (-1 = unlabelled)."""

    ids: list[str]
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64, -1 where unknown
    class_names: list[str]
    paths: list[str] | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)  # (source, why it failed)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def label_names(self) -> list[str | None]:
        return [self.class_names[i] if i >= 0 else None for i in self.labels]

    def take(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        """The images at `rows`, in that order (same classes)."""
        rows = np.asarray(rows, dtype=np.int64).tolist()
        return Dataset(
            [self.ids[i] for i in rows], self.images[rows], self.labels[rows],
            list(self.class_names), [self.paths[i] for i in rows] if self.paths else None,
        )  # fmt: skip


@dataclass
class Cifar10:
    train: Dataset
    test: Dataset
    source: str  # which file or folder the images came from


# --- discovery ------------------------------------------------------------------------------


def user_cache_dir() -> Path:
    explicit = os.environ.get("CBIR_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cbir"


def candidate_dirs(data_dir: str | Path | None) -> list[Path]:
    folders = []
    if data_dir:
        folders.append(Path(data_dir).expanduser())
    if os.environ.get("CBIR_DATA_DIR"):
        folders.append(Path(os.environ["CBIR_DATA_DIR"]).expanduser())
    folders.append(user_cache_dir())
    return folders


def find_cifar10_source(data_dir: str | Path | None = None) -> Path | None:
    for folder in candidate_dirs(data_dir):
        for name in (OFFICIAL_TARBALL, OFFICIAL_FOLDER, MIRROR_TARBALL, MIRROR_FOLDER):
            if (folder / name).exists():
                return folder / name
    return None


def load_cifar10(
    data_dir: str | Path | None = None,
    download: bool = True,
    url: str = CIFAR10_URL,
    md5: str = CIFAR10_MD5,
    use_cache: bool = True,
    progress: Progress | None = None,
) -> Cifar10:
    """CIFAR-10 train (50,000) and test (10,000) splits from the first source found."""
    source = find_cifar10_source(data_dir)
    if source is None:
        searched = ", ".join(str(d) for d in candidate_dirs(data_dir))
        if not download:
            raise DataNotFoundError(_not_found_message(searched, "downloading is switched off"))
        try:
            source = download_cifar10(user_cache_dir(), url=url, md5=md5)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            raise DataNotFoundError(
                _not_found_message(searched, f"the download from {url} failed: {error}")
            ) from None
    cache_file = _cache_file(source) if use_cache else None
    if cache_file is not None and cache_file.exists():
        try:
            return _read_cache(cache_file, source)
        except (OSError, ValueError, KeyError) as error:
            log.warning("ignoring unreadable CIFAR-10 cache %s (%s)", cache_file, error)
    dataset = _read_source(source, progress)
    if cache_file is not None:
        _write_cache(cache_file, dataset)
    return dataset


def _not_found_message(searched: str, why: str) -> str:
    return (
        f"CIFAR-10 not found (looked in {searched}) and {why}. Pass --data DIR or set "
        f"CBIR_DATA_DIR to a folder holding {OFFICIAL_TARBALL}, {OFFICIAL_FOLDER}/, "
        f"{MIRROR_TARBALL} or {MIRROR_FOLDER}/"
    )


def _read_source(source: Path, progress: Progress | None) -> Cifar10:
    name = source.name
    if name == OFFICIAL_TARBALL:
        return _read_official(_official_members_from_tarball(source), str(source))
    if name == OFFICIAL_FOLDER:
        return _read_official(_official_members_from_folder(source), str(source))
    if name == MIRROR_TARBALL:
        return _read_mirror(_mirror_files_from_tarball(source), str(source), progress)
    return _read_mirror(_mirror_files_from_folder(source), str(source), progress)


# --- download -------------------------------------------------------------------------------


def download_cifar10(target_dir: Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download the official tarball into `target_dir`, verify its md5, then move it in place."""
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / OFFICIAL_TARBALL
    log.info("downloading CIFAR-10 from %s", url)
    digest = hashlib.md5()
    fd, tmp_name = tempfile.mkstemp(prefix=".download.", dir=target_dir)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(
                f"downloaded {url} has md5 {digest.hexdigest()}, expected {md5}; "
                "the file was discarded, try again or pass --data DIR"
            )
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return target


# --- the official python format -------------------------------------------------------------


class _BatchUnpickler(pickle.Unpickler):
    """The official batches are pickles; allow only what they contain (dicts, lists, bytes,
    numpy arrays), so a hostile file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _read_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
        pixels = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as error:
        raise DataNotFoundError(f"{where}: not a valid CIFAR-10 batch ({error})") from None
    if pixels.ndim != 2 or pixels.shape[1] != 3072 or len(pixels) != len(labels):
        raise DataNotFoundError(f"{where}: unexpected CIFAR-10 batch shape {pixels.shape}")
    # Rows are 1024 red, 1024 green, 1024 blue values of a 32x32 image, row-major.
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


OFFICIAL_BATCHES = {
    "train": [f"data_batch_{i}" for i in range(1, 6)],
    "test": ["test_batch"],
}


def _official_members_from_tarball(path: Path) -> dict[str, bytes]:
    wanted = {name for names in OFFICIAL_BATCHES.values() for name in names}
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            base = Path(member.name).name
            if member.isfile() and base in wanted:
                members[base] = archive.extractfile(member).read()
    return members


def _official_members_from_folder(path: Path) -> dict[str, bytes]:
    return {
        name: (path / name).read_bytes()
        for names in OFFICIAL_BATCHES.values()
        for name in names
        if (path / name).is_file()
    }


def _read_official(members: dict[str, bytes], source: str) -> Cifar10:
    splits = {}
    for split, names in OFFICIAL_BATCHES.items():
        missing = [name for name in names if name not in members]
        if missing:
            raise DataNotFoundError(f"{source}: missing CIFAR-10 batch files {missing}")
        parts = [_read_batch(members[name], f"{source}/{name}") for name in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        # Official position in the concatenated batches: the id the reference design used.
        ids = [f"{split}-{i}" for i in range(len(images))]
        splits[split] = Dataset(ids, images, labels, list(CIFAR10_CLASSES))
    return Cifar10(splits["train"], splits["test"], source)


# --- the JPEG mirror ------------------------------------------------------------------------


def _mirror_key(relative: str) -> tuple[str, str, str] | None:
    """'cifar10-jpeg/train/cat/0042.jpg' -> ('train', 'cat', '0042'); None for other files."""
    parts = Path(relative).parts
    if len(parts) < 3 or Path(relative).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    split, label, stem = parts[-3], parts[-2], Path(parts[-1]).stem
    if split not in ("train", "test") or label not in CIFAR10_CLASSES:
        return None
    return split, label, stem


def _mirror_files_from_tarball(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r:gz") as archive:
        for member in archive:
            if member.isfile() and _mirror_key(member.name):
                yield member.name, archive.extractfile(member).read()


def _mirror_files_from_folder(path: Path) -> Iterator[tuple[str, bytes]]:
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path.parent).as_posix()
        if file.is_file() and _mirror_key(relative):
            yield relative, file.read_bytes()


def _read_mirror(
    files: Iterator[tuple[str, bytes]], source: str, progress: Progress | None
) -> Cifar10:
    entries: dict[str, list[tuple[int, str, bytes]]] = {"train": [], "test": []}
    for name, data in files:
        split, label, stem = _mirror_key(name)
        entries[split].append((CIFAR10_CLASSES.index(label), stem, data))
    splits = {}
    for split, rows in entries.items():
        if not rows:
            raise DataNotFoundError(f"{source}: no {split} images in the CIFAR-10 JPEG mirror")
        rows.sort(key=lambda row: (row[0], row[1]))  # class order, then file number
        ids = [f"{split}-{CIFAR10_CLASSES[label]}-{stem}" for label, stem, _ in rows]
        decoded = _decode_in_chunks([row[2] for row in rows], ids, progress)
        labels = np.array([row[0] for row in rows], dtype=np.int64)
        splits[split] = Dataset(ids, decoded, labels, list(CIFAR10_CLASSES))
    return Cifar10(splits["train"], splits["test"], source)


def _decode_in_chunks(
    blobs: list[bytes], ids: list[str], progress: Progress | None, chunk: int = 2048
) -> np.ndarray:
    out = np.empty((len(blobs), 32, 32, 3), dtype=np.uint8)
    for start in range(0, len(blobs), chunk):
        batch = decode_many(blobs[start : start + chunk], size=(32, 32), names=ids[start:])
        if batch.failures:
            position, why = batch.failures[0]
            raise DataNotFoundError(f"CIFAR-10 mirror image {ids[start + position]}: {why}")
        out[start : start + len(batch.images)] = batch.images
        if progress:
            progress(len(batch.images))
    return out


# --- decoded-array cache --------------------------------------------------------------------


def _cache_file(source: Path) -> Path:
    stat = source.stat()
    identity = f"{CACHE_FORMAT}|{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return user_cache_dir() / "arrays" / f"cifar10-{digest}.npz"


def _write_cache(path: Path, data: Cifar10) -> None:
    buffer = io.BytesIO()
    arrays = {}
    for split in ("train", "test"):
        part: Dataset = getattr(data, split)
        arrays[f"{split}_images"] = part.images
        arrays[f"{split}_labels"] = part.labels
        arrays[f"{split}_ids"] = np.array(part.ids)
    np.savez(buffer, **arrays)
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as error:  # a read-only cache only costs speed
        log.warning("could not cache decoded CIFAR-10 at %s (%s)", path, error)


def _read_cache(path: Path, source: Path) -> Cifar10:
    with np.load(path, allow_pickle=False) as arrays:
        splits = {
            split: Dataset(
                [str(i) for i in arrays[f"{split}_ids"]],
                arrays[f"{split}_images"],
                arrays[f"{split}_labels"].astype(np.int64),
                list(CIFAR10_CLASSES),
            )
            for split in ("train", "test")
        }
    return Cifar10(splits["train"], splits["test"], str(source))


def clear_cache() -> None:
    shutil.rmtree(user_cache_dir() / "arrays", ignore_errors=True)


# --- image folders --------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderEntry:
    id: str  # path relative to the folder, with forward slashes
    path: Path
    label: str | None  # the class subfolder, None for images at the top level


def scan_folder(root: str | Path) -> list[FolderEntry]:
    """Every image file under `root` (hidden files skipped), sorted by id. Images inside a
    subfolder take its name as their label; images at the top level are unlabelled."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"{root} is not a folder of images")
    entries = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            label = relative.parts[0] if len(relative.parts) > 1 else None
            entries.append(FolderEntry(relative.as_posix(), path, label))
    return entries


def load_folder(
    root: str | Path, size: tuple[int, int], progress: Progress | None = None
) -> Dataset:
    """Decode a whole folder to one batch; unreadable images are skipped and listed in
    `failures`, so one bad file does not stop a benchmark."""
    entries = scan_folder(root)
    if not entries:
        raise DataNotFoundError(f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    class_names = sorted({e.label for e in entries if e.label is not None})
    ids, labels, paths, chunks, failures = [], [], [], [], []
    for start in range(0, len(entries), 1024):
        part = entries[start : start + 1024]
        batch = decode_many([e.path for e in part], size=size)
        for position, why in batch.failures:
            log.warning("skipping %s", why)
            failures.append((str(part[position].path), why))
        for position in batch.ok:
            entry = part[position]
            ids.append(entry.id)
            paths.append(str(entry.path))
            labels.append(class_names.index(entry.label) if entry.label is not None else -1)
        chunks.append(batch.images)
        if progress:
            progress(len(part))
    images = np.concatenate(chunks) if chunks else np.zeros((0, *size, 3), np.uint8)
    return Dataset(ids, images, np.array(labels, dtype=np.int64), class_names, paths, failures)
