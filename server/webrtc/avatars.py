"""Avatars of the live server: uploaded portraits → cached `Avatar`s (reference bank computed once).

    store = AvatarStore(worker, cfg)
    await store.add_default(path)                   # id "default": the bundled portrait
    avatar_id = await store.add_upload(image_bytes) # sha256-derived id; same bytes → same id, no recompute
    entry = store.get(avatar_id)                    # .avatar is shared by every session using it

An upload is checked like a file given to `livehead animate` (engine.media.load_image: a readable
image, ≤ 40 megapixels, sides ≥ 64 px), then needs a detectable face (`portrait_for`: a face crop, or the
whole photo for the motion tier); the model work (VAE encode and ReferenceNet bank, or the photo's rig)
runs on the generation worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from livehead.engine.common.errors import InputError
from livehead.engine.media.audio_video import load_image
from livehead.engine.media.bundled import DEFAULT_IMAGE
from livehead.engine.model.config import ModelConfig
from livehead.engine.runtime.portrait import bundled_portrait, portrait_for
from livehead.engine.runtime.session import Avatar, prepare_avatar

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # POST /avatars limit (HTTP 413 above)
MAX_AVATARS = 32  # uploads kept; the least recently used one not in use is evicted


@dataclass
class AvatarEntry:
    id: str
    avatar: Avatar
    created: float = field(default_factory=time.monotonic)
    in_use: int = 0  # live sessions using it (never evicted while > 0)


def _decode_upload(data: bytes, cfg: ModelConfig):
    """Image bytes → the picture the preset animates; InputError (with a user-facing reason) otherwise."""
    fd, name = tempfile.mkstemp(prefix="livehead-upload-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        try:
            image = load_image(name)
        except InputError as err:
            raise InputError(str(err).replace(name, "the upload")) from None
        try:
            return portrait_for(cfg, image, crop=True)
        except InputError as err:  # the CLI's hint (--no-crop) means nothing to an uploader
            raise InputError(str(err).split(", or pass --no-crop")[0]) from None
    finally:
        Path(name).unlink(missing_ok=True)


class AvatarStore:
    def __init__(self, worker, cfg: ModelConfig, max_avatars: int = MAX_AVATARS):
        self.worker = worker
        self.cfg = cfg
        self.max_avatars = max_avatars
        self.entries: OrderedDict[str, AvatarEntry] = OrderedDict()
        self._building: dict[str, asyncio.Future] = {}

    def get(self, avatar_id: str) -> AvatarEntry | None:
        entry = self.entries.get(avatar_id)
        if entry is not None:
            self.entries.move_to_end(avatar_id)
        return entry

    async def _build(self, avatar_id: str, crop) -> AvatarEntry:
        avatar = await self.worker.run(prepare_avatar, self.worker.runners, crop.image, crop.mask)
        entry = AvatarEntry(avatar_id, avatar)
        self.entries[avatar_id] = entry
        self._evict()
        return entry

    def _evict(self) -> None:
        for key in list(self.entries):
            if len(self.entries) <= self.max_avatars:
                return
            if key != "default" and self.entries[key].in_use == 0:
                del self.entries[key]

    async def add_default(self, path: str | Path) -> AvatarEntry:
        loop = asyncio.get_running_loop()
        if Path(path).resolve() == Path(DEFAULT_IMAGE).resolve():  # the bundled one: at the preset's output size
            crop = await loop.run_in_executor(None, bundled_portrait, self.cfg)
        else:
            crop = await loop.run_in_executor(None, lambda: portrait_for(self.cfg, load_image(path), crop=True))
        return await self._build("default", crop)

    async def add_upload(self, data: bytes) -> str:
        """Validate, crop and prepare an uploaded portrait; returns its id. InputError: not an image, no face."""
        if not data:
            raise InputError("empty upload; send a PNG or JPEG portrait as the request body or a multipart file")
        avatar_id = hashlib.sha256(data).hexdigest()[:16]
        if avatar_id in self.entries:
            self.get(avatar_id)
            return avatar_id
        if avatar_id in self._building:  # the same portrait uploaded twice at once: build once
            await asyncio.shield(self._building[avatar_id])
            return avatar_id
        fut = asyncio.get_running_loop().create_future()
        self._building[avatar_id] = fut
        try:
            crop = await asyncio.get_running_loop().run_in_executor(None, _decode_upload, data, self.cfg)
            await self._build(avatar_id, crop)
            fut.set_result(avatar_id)
        except BaseException as err:
            fut.set_exception(err)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._building[avatar_id]
        return avatar_id
