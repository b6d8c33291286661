"""Training the `cnn` extractor's networks (`cbir train`, `cbir tune`): the training loop and
its parameters, augmentation, losses, distillation from teachers and the Ray Tune search.

Kept apart from `cbir.features.cnn`, which holds what describing images needs (networks,
checkpoints, model loading, inference, the extractor): indexing and searching never import
this package. Nothing is imported here, so `train_config` stays free of torch."""
