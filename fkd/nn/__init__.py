"""The framework code the models share: the torch training loop, checkpoints and augmentation, TensorFlow set-up, and what a training run reports."""
