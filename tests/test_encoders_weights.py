"""The packaged EfficientNet-Lite0 weights, renamed onto timm, compute what the reference computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from encoders.vision import VisionEncoder
from encoders.weights import PACKAGED_IMAGE_WEIGHTS, map_state_dict, packaged_path, read_state_dict
from recdata.errors import DataError

timm = pytest.importorskip("timm")
efficientnet_lite_pytorch = pytest.importorskip("efficientnet_lite_pytorch")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # The CI box is small and shared; one thread per test process avoids oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def packaged_state() -> dict:
    return read_state_dict(packaged_path(PACKAGED_IMAGE_WEIGHTS, "tf_efficientnet_lite0"))


@pytest.fixture(scope="module")
def reference(packaged_state: dict) -> torch.nn.Module:
    """The implementation the packaged checkpoint was written for, with its own key names."""
    model = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(packaged_state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 224, 224, generator=generator)


def test_mapped_weights_give_the_reference_logits(packaged_state: dict, reference, images) -> None:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    model.load_state_dict(map_state_dict(packaged_state, model.state_dict()), strict=True)
    with torch.no_grad():
        ours, theirs = model(images), reference(images)
    assert ours.shape == theirs.shape == (2, 1000)
    assert (ours - theirs).abs().max().item() < 1e-4
    # Same top classes, not just close numbers.
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_vision_encoder_features_are_the_reference_pooled_features(reference, images) -> None:
    encoder = VisionEncoder(model_name="tf_efficientnet_lite0", weights=None, device="cpu")
    assert encoder.dim == 1280
    with torch.no_grad():
        ours = encoder.model(images)
        theirs = reference.extract_features(images).mean(dim=(2, 3))
    assert (ours - theirs).abs().max().item() < 1e-4


def test_positional_mapping_rejects_another_architecture(packaged_state: dict) -> None:
    other = timm.create_model("tf_efficientnet_b0", pretrained=False, num_classes=0)
    with pytest.raises(DataError, match="different architecture|do not line up"):
        map_state_dict(packaged_state, other.state_dict())


def test_weights_file_with_timm_names_loads_by_name(tmp_path: Path, packaged_state: dict, images) -> None:
    from safetensors.torch import save_file

    donor = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    donor.load_state_dict(map_state_dict(packaged_state, donor.state_dict()))
    path = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))

    from_file = VisionEncoder(model_name="tf_efficientnet_lite0", weights=str(path))
    packaged = VisionEncoder(model_name="tf_efficientnet_lite0", weights=None)
    with torch.no_grad():
        assert torch.equal(from_file.model(images), packaged.model(images))


def test_bad_weights_are_one_line_data_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read image weights"):
        VisionEncoder(model_name="tf_efficientnet_lite0", weights=str(junk))
    with pytest.raises(DataError, match="not found"):
        VisionEncoder(model_name="tf_efficientnet_lite0", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(DataError, match="unknown timm image model"):
        VisionEncoder(model_name="no_such_model_xyz", weights="none")


def test_real_poster_is_recognised(packaged_state: dict) -> None:
    """Weights and timm's preprocessing together: the Jaws poster shows a great white shark."""
    poster = SHARED_DATA / "movielens" / "posters" / "1387.jpg"
    if not poster.exists():
        pytest.skip(f"real data not found at {poster}")
    from PIL import Image
    from timm.data import ImageNetInfo

    encoder = VisionEncoder(model_name="tf_efficientnet_lite0", weights=None)
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    classifier.load_state_dict(map_state_dict(packaged_state, classifier.state_dict()))
    pixels = encoder.transform(Image.open(poster).convert("RGB"))[None]
    with torch.no_grad():
        top = classifier(pixels).argmax(1).item()
    assert "great white shark" in ImageNetInfo().index_to_description(top)
