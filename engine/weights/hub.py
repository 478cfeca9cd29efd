"""Fetch a preset's public checkpoint files from the Hugging Face hub into the layout `engine.weights` reads.

    paths = download_weights("echomimic-v1-acc", Path("weights/echomimic-v1-acc"))

Files (see `required_files`): EchoMimic v1's release files from `BadToBest/EchoMimic` and the VAE from
`stabilityai/sd-vae-ft-mse`, laid out as

    reference_unet.pth  denoising_unet{variant}.pth  motion_module{variant}.pth  face_locator.pth
    audio_processor/whisper_tiny.pt  sd-vae-ft-mse/{diffusion_pytorch_model.safetensors, config.json}

Downloads go through `huggingface_hub.hf_hub_download(local_dir=...)`: resumable, with its own progress
bars; HF_ENDPOINT (a mirror), HF_TOKEN and HF_HUB_OFFLINE are honoured. A file already complete in the
destination is skipped without touching the network, so a re-run after an interruption only fetches
what is missing. Every failure is an `InputError` with one line naming the file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from livehead.engine.common.errors import InputError
from livehead.engine.model.config import ModelConfig

ECHOMIMIC_REPO = "BadToBest/EchoMimic"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
VAE_DIR = "sd-vae-ft-mse"

# Exception modules of the HTTP stacks huggingface_hub has used (requests in 0.x, httpx in 1.x/2.x).
_NETWORK_MODULES = {"requests", "urllib3", "httpx", "httpx2", "httpcore", "httpcore2", "h11", "h2", "ssl", "socket"}


def required_files(preset: str) -> list[tuple[str, str, str]]:
    """(repo_id, filename in the repo, path relative to the weights directory) per file of `preset`.

    Empty for presets without trained weights (`tiny`).
    """
    cfg = ModelConfig.from_name(preset)
    if cfg.seeded_weights:
        return []
    v = cfg.weights_variant
    files = [
        (ECHOMIMIC_REPO, "reference_unet.pth", "reference_unet.pth"),
        (ECHOMIMIC_REPO, f"denoising_unet{v}.pth", f"denoising_unet{v}.pth"),
        (ECHOMIMIC_REPO, f"motion_module{v}.pth", f"motion_module{v}.pth"),
        (ECHOMIMIC_REPO, "face_locator.pth", "face_locator.pth"),
        (ECHOMIMIC_REPO, "audio_processor/whisper_tiny.pt", "audio_processor/whisper_tiny.pt"),
        (VAE_REPO, "diffusion_pytorch_model.safetensors", f"{VAE_DIR}/diffusion_pytorch_model.safetensors"),
        (VAE_REPO, "config.json", f"{VAE_DIR}/config.json"),
    ]
    return files


def _local_dir(dest: Path, filename: str, relpath: str) -> Path:
    """The `local_dir` that makes hf_hub_download write `filename` to `dest / relpath`."""
    if not relpath.endswith(filename):
        raise ValueError(f"{relpath!r} does not end with {filename!r}")
    prefix = relpath[: len(relpath) - len(filename)].rstrip("/")
    return dest / prefix if prefix else dest


def _partial_markers(local_dir: Path, filename: str) -> list[Path]:
    """huggingface_hub's `.incomplete` files of an interrupted download of `filename` into `local_dir`."""
    try:
        from huggingface_hub._local_folder import get_local_download_paths

        pattern = get_local_download_paths(local_dir, filename).incomplete_path("*")
        return sorted(pattern.parent.glob(pattern.name)) if pattern.parent.is_dir() else []
    except Exception:
        root = local_dir / ".cache" / "huggingface" / "download"
        name = Path(filename).name
        return sorted(p for p in root.rglob("*.incomplete") if p.name.startswith(name)) if root.is_dir() else []


def is_complete(dest: Path, repo_id: str, filename: str, relpath: str) -> bool:
    """Present, non-empty and no partial-download marker beside it."""
    path = Path(dest) / relpath
    if not path.is_file() or path.stat().st_size == 0:
        return False
    return not _partial_markers(_local_dir(Path(dest), filename, relpath), filename)


def _offline() -> bool:
    """HF_HUB_OFFLINE as set now; huggingface_hub's own copy (read once, at its import) otherwise."""
    if "HF_HUB_OFFLINE" in os.environ:
        return os.environ["HF_HUB_OFFLINE"].strip().upper() in {"1", "ON", "YES", "TRUE"}
    try:
        from huggingface_hub import constants

        return bool(getattr(constants, "HF_HUB_OFFLINE", False))
    except ImportError:
        return False


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is_network_error(err: BaseException) -> bool:
    for e in _chain(err):
        if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror, socket.timeout)):
            return True
        if type(e).__module__.split(".")[0] in _NETWORK_MODULES:
            return True
        if type(e).__name__ in {"OfflineModeIsEnabled", "LocalEntryNotFoundError"}:
            return True
    return False


def _short(err: BaseException) -> str:
    """`Type: first line of the message`, at most ~160 characters, of the innermost network cause."""
    inner = err
    for e in _chain(err):
        inner = e
    text = (str(inner).strip().splitlines() or [""])[0]
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _hub_address() -> str:
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"]
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except ImportError:
        return "https://huggingface.co"


def _unreachable(repo_id: str, filename: str, dest: Path, why: str) -> InputError:
    return InputError(
        f"cannot fetch {filename} from {repo_id}: the Hugging Face hub at {_hub_address()} is unreachable ({why}); "
        f"set HF_ENDPOINT to a reachable mirror (and unset HF_HUB_OFFLINE), or copy the files into {dest} "
        f"in the release layout (see the README, 'Weights directory layout')"
    )


def _as_input_error(err: Exception, repo_id: str, filename: str, dest: Path) -> InputError:
    """One-line InputError for anything hf_hub_download / get_hf_file_metadata raised."""
    try:
        from huggingface_hub import utils as hfu
    except ImportError:  # pragma: no cover - checked before
        hfu = None

    def _is(name: str) -> bool:
        cls = getattr(hfu, name, None)
        return isinstance(cls, type) and isinstance(err, cls)

    if _is("LocalEntryNotFoundError") or _is("OfflineModeIsEnabled"):
        return _unreachable(repo_id, filename, dest, _short(err))
    if _is("GatedRepoError"):
        return InputError(f"repository {repo_id} is gated (file {filename}): accept its terms on huggingface.co "
                          f"and log in (`hf auth login` or HF_TOKEN), or copy the file into {dest}")
    if _is("RepositoryNotFoundError"):
        return InputError(f"repository {repo_id} not found or not accessible (HTTP 401/404) while fetching "
                          f"{filename}; check HF_ENDPOINT / HF_TOKEN, or copy the file into {dest}")
    if _is("RevisionNotFoundError") or _is("EntryNotFoundError"):
        return InputError(f"file {filename} not found in repository {repo_id} (HTTP 404); check HF_ENDPOINT "
                          f"(a mirror may lack it), or copy the file into {dest}")
    if _is("HfHubHTTPError"):
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403):
            return InputError(f"access to {filename} in repository {repo_id} denied (HTTP {status}); log in "
                              f"(`hf auth login` or HF_TOKEN) or copy the file into {dest}")
        if status == 404:
            return InputError(f"file {filename} or repository {repo_id} not found (HTTP 404); check HF_ENDPOINT, "
                              f"or copy the file into {dest}")
        if status is None and _is_network_error(err):
            return _unreachable(repo_id, filename, dest, _short(err))
        return InputError(f"the Hugging Face hub answered HTTP {status} for {filename} of {repo_id}; try again later, "
                          f"set HF_ENDPOINT to a mirror, or copy the file into {dest}")
    if _is_network_error(err):
        return _unreachable(repo_id, filename, dest, _short(err))
    if isinstance(err, OSError):
        return InputError(f"cannot write {filename} into {dest}: {_short(err)}")
    return InputError(f"downloading {filename} from {repo_id} failed: {_short(err)}")


def download_weights(preset: str, dest: Path, progress: bool = True,
                     report: Callable[[str, Path], None] | None = None) -> list[Path]:
    """Fetch every file of `preset` into `dest` (created if needed); returns their local paths, in order.

    Files already complete in `dest` are skipped without network access. `report(status, path)` is
    called once per file with status "present" or "fetched".
    """
    dest = Path(dest)
    files = required_files(preset)
    if not files:
        raise InputError(f"preset {preset} has no weights to download: it runs with seeded weights built in "
                         f"(no --weights needed); download echomimic-v1-acc or echomimic-v1 instead")
    paths = [dest / rel for _, _, rel in files]
    missing = [(repo, name, rel) for repo, name, rel in files if not is_complete(dest, repo, name, rel)]
    for repo, name, rel in files:
        if (repo, name, rel) not in missing and report is not None:
            report("present", dest / rel)
    if not missing:
        return paths
    if dest.exists() and not dest.is_dir():
        raise InputError(f"weights directory {dest} exists and is not a directory")
    try:
        import huggingface_hub
        from huggingface_hub import utils as hfu
    except ImportError as err:
        raise InputError("downloading needs huggingface_hub: pip install 'huggingface_hub>=0.23'") from err
    if _offline():
        repo, name, _ = missing[0]
        raise _unreachable(repo, name, dest, "HF_HUB_OFFLINE is set")

    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now: huggingface_hub reads it once, at import
    timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    was_disabled = hfu.are_progress_bars_disabled()
    if not progress:
        hfu.disable_progress_bars()
    try:
        for repo, name, rel in missing:
            local_dir = _local_dir(dest, name, rel)
            try:
                # One HEAD without retries first: an unreachable hub fails here at once instead of going
                # through hf_hub_download's retry loop (about 25 s of back-off and log lines per file).
                url = huggingface_hub.hf_hub_url(repo, name, endpoint=endpoint)
                huggingface_hub.get_hf_file_metadata(url, timeout=timeout)
                local_dir.mkdir(parents=True, exist_ok=True)
                got = huggingface_hub.hf_hub_download(repo, name, local_dir=str(local_dir), endpoint=endpoint,
                                                      etag_timeout=timeout)
            except InputError:
                raise
            except Exception as err:
                raise _as_input_error(err, repo, name, dest) from err
            got_path = Path(got)
            if got_path.resolve() != (dest / rel).resolve() or not is_complete(dest, repo, name, rel):
                raise InputError(f"download of {name} from {repo} did not produce {dest / rel}; "
                                 f"delete {dest / rel} if present and run the command again")
            if report is not None:
                report("fetched", dest / rel)
    finally:
        if not progress and not was_disabled:
            hfu.enable_progress_bars()
    return paths
