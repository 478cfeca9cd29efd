"""The engine: models, weights, streaming runtime, media, synthetic data, training and evaluation.

It never imports `livehead.server` or `livehead.export`; front ends wire backends in. Rooms and their
layers (lower ones never import higher ones): common < model, media < weights < runtime < synth <
training, eval — checked by import-linter (pyproject.toml).
"""
