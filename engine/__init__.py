"""livehead engine: EMO-family model, sampler, streaming session and offline render.

The engine never imports `server` or `export`; front ends wire backends in.
"""
