"""Session, the Runners interface and its torch/CUDA backends, offline render; imports model..common."""
