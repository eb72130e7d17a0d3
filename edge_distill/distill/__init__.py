"""Knowledge distillation: losses (pure functions on tensors) and the training loop."""
