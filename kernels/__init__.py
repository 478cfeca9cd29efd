"""Triton kernels, each file: kernel + torch reference + benchmark entry; imports nothing of the project."""
