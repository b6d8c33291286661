"""CNN embeddings trained from scratch: networks, augmentation, losses, the training loop,
checkpoints, model loading with layer hooks, batched inference and the `cnn` extractor.
Everything here imports torch, so `cbir.features` reaches it only through the lazy registry."""
