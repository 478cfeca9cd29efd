"""Kernels (Triton on the GPU, numba on the CPU), each file kernel + reference + benchmark; imports no project code."""
