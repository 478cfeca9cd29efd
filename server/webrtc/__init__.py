"""The aiohttp + aiortc server: signalling, avatars, tracks, A/V pacing, the page; imports backends, engine."""
