"""The reference: what one classic Flask + Celery (--pool=solo) + Pillow worker does per
image, sequentially: requests.get the URL, open it with Pillow, save it as a JPEG at
quality 50 to a file. Run by the end-to-end bench (benches/e2e/main.rs) against the
same local image server and latency as pixbatch.

Usage: python reference.py URL_LIST_FILE OUT_DIR
Prints one JSON object on its last line: images, ok, seconds, per-image seconds.
"""

import io
import json
import os
import sys
import time

import PIL
import requests
from PIL import Image


def process(url, out_path):
    # As a typical Celery task body does it: a fresh requests.get per image.
    resp = requests.get(url, timeout=30)
    resp.raise_for_status()
    img = Image.open(io.BytesIO(resp.content))
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    img.save(out_path, "JPEG", quality=50)


def main():
    url_file, out_dir = sys.argv[1], sys.argv[2]
    with open(url_file, encoding="utf-8") as f:
        urls = [line.strip() for line in f if line.strip()]
    os.makedirs(out_dir, exist_ok=True)
    per_image = []
    ok = 0
    errors = []
    start = time.perf_counter()
    for i, url in enumerate(urls):
        t = time.perf_counter()
        try:
            process(url, os.path.join(out_dir, f"{i}.jpg"))
            ok += 1
        except Exception as e:  # a failed image is counted, as a worker would log it
            errors.append(f"{url}: {e}")
        per_image.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "images": len(urls),
                "ok": ok,
                "seconds": seconds,
                "per_image_seconds": per_image,
                "errors": errors[:5],
                "python": sys.version.split()[0],
                "pillow": PIL.__version__,
                "requests": requests.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
