"""livehead kernels package."""
