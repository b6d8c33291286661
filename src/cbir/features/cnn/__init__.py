"""CNN embeddings: networks, checkpoints, model loading with layer hooks, batched inference
and the `cnn` extractor (training them is `cbir.training`).
Everything here imports torch, so `cbir.features` reaches it only through the lazy registry."""
