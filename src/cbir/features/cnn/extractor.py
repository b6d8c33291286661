"""The `cnn` extractor: L2-normalised embeddings of a network we trained (or one you give),
with optional PCA (fitted on the index images) and optional class fusion.

Class fusion, as the reference did it: every vector gets a one-hot class block appended,
the TRUE class for index images (`transform_index(images, labels)`) and the network's
PREDICTED class for queries (`transform(images)`); a query's label is never used. With unit
embeddings the fused vector is [e, w * onehot] / sqrt(1 + w^2), unit length again, so cosine
similarity = (cos(e_q, e_i) + w^2 [same class]) / (1 + w^2).

With class fusion on, a `classifiers` committee may decide the predicted class: the class
probabilities of the embedding network and of each listed network are averaged. The index
keeps the one fast network (true labels need no prediction); queries, described once per
search, afford the extra networks, and a query's class is what fused retrieval hinges on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbir.errors import CbirError
from cbir.features import register
from cbir.features.base import Extractor, ImageBatches, check_image_batch
from cbir.features.cnn.feature_pca import FeaturePca
from cbir.features.params import NetworkKnobs, Params, none_was
from cbir.index.base import l2_normalise
from cbir.progress import progress_bar

if TYPE_CHECKING:
    from cbir.features.cnn.models import Reader

# the keys of networks.NORMALISATIONS, named here so that checking parameters needs no torch
NORMALISATION_NAMES = ("cifar", "imagenet", "lite")
STATE_FILE = "cnn_state.json"


@dataclass(frozen=True, kw_only=True)
class CnnParams(Params):
    # None: the committed default; or a `cbir train` folder or a model file
    weights: str | None = none_was("")
    # for a bare .safetensors state dict: airbench, lenet, mlp, torchvision:NAME
    arch: str | None = none_was("")
    # module whose output is the embedding (forward hook); None: the penultimate
    layer: str | None = none_was("")
    image_size: int = 32  # input side for the network (ImageNet models want 224)
    normalisation: str = "cifar"  # channel statistics: cifar, imagenet or lite (TF-Lite models)
    pca: int = 0  # components kept (0 = no PCA), fitted on the index images
    class_fusion: bool = False
    fusion_weight: float = 1.0
    tta: int = 0  # test-time augmentation: 0 none, 1 flip, 2 flip + translate
    query_tta: int | None = none_was(-1)  # the same for query images only; None: as `tta`
    # extra networks that vote on the predicted class (class fusion only), a list or "a,b":
    # `cbir train` folders or model files taking the same input (image_size, normalisation)
    # as `weights`; `wide`, `wide-seed1` = the committed wide classifiers
    classifiers: tuple[str, ...] = ()
    bf16: bool = True

    def validate(self) -> None:
        self.require_range("image_size", 8)
        self.require_range("pca", 0)
        self.require_range("fusion_weight", 0.0)
        self.require_range("tta", 0, 2)
        if self.query_tta is not None:
            self.require_range("query_tta", 0, 2)
        self.require_choice("normalisation", NORMALISATION_NAMES)
        self.require(
            not self.classifiers or self.class_fusion, "classifiers",
            "only votes on the class that class fusion appends: set class_fusion=true as well",
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class CnnKnobs(NetworkKnobs):
    batch_size: int = 512


@register("cnn")
class CnnExtractor(FeaturePca, Extractor):
    """Embeddings of a CNN; `weights` None is the default network committed with cbir."""

    about = "CIFAR-10's ten classes at 32x32 (a CNN trained by cbir), or the network you give"
    params_type = CnnParams
    knobs_type = CnnKnobs
    config: CnnParams
    knobs: CnnKnobs

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._reader: Reader | None = None
        self._committee: list[Reader] = []
        self._embedding_dim: int | None = None
        self._classes: int | None = None

    # --- the network, loaded on first use so that listing extractors stays instant -------------
    def _knobs_changed(self, before: Params) -> None:
        if self._reader is not None:  # loaded already: its threads from now on
            import torch

            torch.set_num_threads(self.knobs.threads)

    def _load(self) -> None:
        if self._reader is not None:
            return
        import torch

        params = self.config
        torch.set_num_threads(self.knobs.threads)
        self._reader = network_reader(params.weights or "", params.arch or "", params.layer or "")
        self._embedding_dim, self._classes = self._probe(self._reader)
        if params.class_fusion and self._classes is None:
            raise CbirError("class_fusion needs a model with a classifier output (logits)")
        for path in classifier_paths(params.classifiers):
            reader = network_reader(str(path))
            if self._probe(reader)[1] != self._classes:
                raise CbirError(
                    f"classifier {path} does not predict the {self._classes} classes of "
                    "the embedding network"
                )
            self._committee.append(reader)

    def _probe(self, reader: Reader) -> tuple[int, int | None]:
        """(embedding dimension, classes or None) of a network, from two blank images."""
        from cbir.features.cnn.inference import infer

        side = self.config.image_size
        try:
            probe, logits = infer(reader, np.zeros((2, side, side, 3), np.uint8), bf16=False)
        except RuntimeError as error:  # a shape mismatch deep in the network
            why = str(error).strip().splitlines()[0]
            raise CbirError(
                f"the network cannot take {side}x{side} images (parameter image_size={side}): "
                f"{why}; give the image_size it was trained at (32 for cbir's own networks)"
            ) from None
        return probe.shape[1], (None if logits is None else logits.shape[1])

    @property
    def dim(self) -> int:
        self._load()
        base = self.config.pca or self._embedding_dim
        return base + (self._classes if self.config.class_fusion else 0)

    @property
    def uses_index_labels(self) -> bool:
        """True when index images must go through `transform_index` with their labels."""
        return self.config.class_fusion

    @property
    def class_names(self) -> list[str] | None:  # type: ignore[override]
        """CIFAR-10's classes for the networks `cbir train` makes (the committed default or a
        training folder); a user's model file names none, so its predicted class is used."""
        weights = self.config.weights or ""
        if not self.config.class_fusion or (weights and not Path(weights).is_dir()):
            return None
        from cbir.datasets import CIFAR10_CLASSES

        self._load()
        return list(CIFAR10_CLASSES) if self._classes == len(CIFAR10_CLASSES) else None

    @property
    def run_tag(self) -> str:
        """TREC run tag: class-fused runs are told apart from pure-embedding ones."""
        return "cnn+class_fusion" if self.config.class_fusion else "cnn"

    # --- the protocol --------------------------------------------------------------------------
    def fit(self, images: ImageBatches, labels: np.ndarray | None = None) -> CnnExtractor:
        """Fit PCA on the index images' embeddings; nothing about queries is recorded."""
        if not self.config.pca:
            return self
        batches = [images] if isinstance(images, np.ndarray) else images
        embeddings = np.concatenate([self._raw(check_image_batch(b))[0] for b in batches])
        self._fit_pca(embeddings)
        return self

    @property
    def query_tta(self) -> int:
        return self.config.tta if self.config.query_tta is None else self.config.query_tta

    @property
    def distinct_queries(self) -> bool:  # type: ignore[override]
        return self.query_tta != self.config.tta

    def _extract_batch(self, images: np.ndarray) -> np.ndarray:
        """Vectors of images to index; class fusion (when on) uses the predicted class."""
        return self._predicted_vectors(images, self.config.tta)

    def _extract_query_batch(self, images: np.ndarray) -> np.ndarray:
        """Query vectors, under `query_tta`: a query is described once per search, so it can
        afford the mirrored and shifted views that make its predicted class more accurate."""
        return self._predicted_vectors(images, self.query_tta)

    def _predicted_vectors(self, images: np.ndarray, tta: int) -> np.ndarray:
        embeddings, logits = self._raw(images, tta)
        if not self.config.class_fusion:
            return self._finish(embeddings, None)
        return self._finish(embeddings, self._predict(images, logits, tta))

    def _predict(self, images: np.ndarray, logits: np.ndarray, tta: int) -> np.ndarray:
        """Predicted classes: this network's, or the committee's mean class probabilities."""
        if not self._committee:
            return logits.argmax(1)
        from cbir.features.cnn.inference import softmax

        probabilities = softmax(logits)
        for reader in self._committee:
            probabilities += softmax(self._infer(reader, images, tta)[1])
        return probabilities.argmax(1)

    def transform_index(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Index vectors: class fusion uses the TRUE labels (an unknown label, -1, falls back
        to the predicted class). Without class fusion this equals `transform(images)`."""
        images = check_image_batch(images)
        labels = np.asarray(labels)
        if len(labels) != len(images):
            raise CbirError(f"{len(images)} images but {len(labels)} labels")
        if not self.config.class_fusion:
            return self.transform(images)
        out = np.empty((len(images), self.dim), np.float32)
        step = self.knobs.batch_size * 4
        with progress_bar(len(images), "describe index") as bar:
            for start in range(0, len(images), step):
                chunk = images[start : start + step]
                embeddings, logits = self._raw(chunk)
                classes = labels[start : start + step].astype(np.int64)
                unknown = classes < 0
                if unknown.any():
                    tta = self.config.tta
                    classes[unknown] = self._predict(chunk[unknown], logits[unknown], tta)
                out[start : start + step] = self._finish(embeddings, classes)
                bar.update(len(classes))
        return out

    # --- steps ---------------------------------------------------------------------------------
    def _raw(
        self, images: np.ndarray, tta: int | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        self._load()
        return self._infer(self._reader, images, self.config.tta if tta is None else tta)

    def _infer(
        self, reader: Reader, images: np.ndarray, tta: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        from cbir.features.cnn.inference import infer

        return infer(
            reader, images, tta=tta, batch_size=self.knobs.batch_size,
            bf16=self.config.bf16, statistics=self.config.normalisation,
            size=self.config.image_size,
        )  # fmt: skip

    def _finish(self, embeddings: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
        embeddings = self._project(embeddings)
        vectors = l2_normalise(embeddings)
        if not self.config.class_fusion:
            return vectors
        weight = self.config.fusion_weight
        onehot = np.zeros((len(vectors), self._classes), np.float32)
        onehot[np.arange(len(vectors)), classes] = weight
        return np.hstack([vectors, onehot]) / np.float32(np.sqrt(1.0 + weight**2))

    # --- state ---------------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> None:
        # The weights' checksum pins the network: a collection must not silently change meaning
        # when the default weights are retrained.
        state = {"weights_sha256": weights_checksum(self.config.weights or ""),
                 "classifiers_sha256": self._classifier_checksums()}  # fmt: skip
        (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
        self._save_pca(folder)

    def _load_state(self, folder: Path) -> None:
        state_path = folder / STATE_FILE
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            if state["weights_sha256"] != weights_checksum(self.config.weights or ""):
                raise CbirError(
                    f"the CNN weights changed since this collection was built ({folder}); "
                    "re-index it or point weights= at the original model"
                )
            if state.get("classifiers_sha256", []) != self._classifier_checksums():
                raise CbirError(
                    f"the CNN classifiers changed since this collection was built ({folder}); "
                    "re-index it or point classifiers= at the original models"
                )
        self._load_pca(folder)

    def _classifier_checksums(self) -> list[str]:
        return [weights_checksum(str(p)) for p in classifier_paths(self.config.classifiers)]


def network_reader(weights: str, arch: str = "", layer: str = "") -> Reader:
    """The reader of a network ready for inference (BatchNorm folded, channels-last); it holds
    the model."""
    import torch

    from cbir.features.cnn.models import load_model, make_reader
    from cbir.features.cnn.networks import EmbeddingNet, fold_batchnorm

    model = load_model(weights, arch)
    if isinstance(model, EmbeddingNet):
        fold_batchnorm(model)  # fewer passes over memory per image
    model = model.to(memory_format=torch.channels_last)
    return make_reader(model, layer)


def classifier_paths(spec: str | tuple[str, ...]) -> list[Path]:
    """The networks a `classifiers` parameter names ("a,b" or a list), in order: committed ones
    by name (`wide`, `wide-seed1`), any other as a path."""
    from cbir.features.cnn.models import COMMITTED_CLASSIFIERS

    names = [name.strip() for name in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [name for name in names if name]
    return [COMMITTED_CLASSIFIERS.get(name) or Path(name).expanduser() for name in names]


def weights_checksum(weights: str) -> str:
    """sha256 over the model file, or over every file of a checkpoint folder."""
    from cbir.features.cnn.models import DEFAULT_WEIGHTS

    path = Path(weights).expanduser() if weights else DEFAULT_WEIGHTS
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        if file.suffix in (".safetensors", ".json", ".pt", ".pt2", ".ts"):
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()
