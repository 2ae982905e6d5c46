"""What one hostile request costs, before and after the request limits: peak memory added and
time, each case in a fresh process (``ru_maxrss`` is a process's peak).

- a 1x100000 PNG (a few hundred bytes) through the upload check and CLIP's preprocessing
  (the built-in world's 64 px CLIP; at 224 px the resize is 3.5x larger on each side);
- a 12000x12000 PNG sent inline as a ``data:`` URL, through the image input's preprocessing;
- a 200 MB text through the text check.

``python benchmarks/bench_limits.py`` prints one row per case.
"""

from __future__ import annotations

import base64
import io
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES = ("thin_png", "data_url", "huge_text")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thin_png(after: bool):
    from PIL import Image

    from sae_explorer.encoder import load_encoder
    from sae_explorer.images import check_image

    encoder = load_encoder("builtin:shapes", device="cpu")
    buf = io.BytesIO()
    Image.new("RGB", (1, 100_000), (255, 0, 0)).save(buf, format="PNG")
    payload = buf.getvalue()

    def run():
        input_px = encoder.preprocess.input_px if after else None
        encoder.encode_images([check_image(payload, input_px=input_px).image])

    return run


def data_url(after: bool):
    from gradio.components import Image as GradioImage
    from gradio.data_classes import ImageData
    from PIL import Image

    from explorer_ui.uploaded_image import UploadedImage
    from sae_explorer.images import check_image

    buf = io.BytesIO()
    Image.new("RGB", (12_000, 12_000), (20, 120, 200)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    component = UploadedImage(type="filepath") if after else GradioImage(type="filepath")

    def run():
        check_image(component.preprocess(ImageData(url=url)))

    return run


def huge_text(after: bool):
    from sae_explorer.images import MAX_TEXT_CHARS, check_text

    text = "a red circle " * 16_000_000  # 208 MB

    def old_check(text: str):  # the check as it was: strip the whole text, then cut
        return text.replace("\x00", "").strip()[:MAX_TEXT_CHARS]

    def run():
        (check_text if after else old_check)(text)

    return run


def measure(case: str, after: bool) -> dict:
    run = globals()[case](after)
    base, t0 = peak_mb(), time.perf_counter()
    outcome = "accepted"
    try:
        run()
    except ValueError as e:
        outcome = f"refused: {str(e)[:60]}"
    return {
        "seconds": time.perf_counter() - t0,
        "added_mb": peak_mb() - base,
        "outcome": outcome,
    }


def main() -> None:
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], sys.argv[2] == "after")))
        return
    print(f"{'case':<10} {'variant':<7} {'peak MB added':>13} {'seconds':>8}  outcome")
    for case in CASES:
        for variant in ("before", "after"):
            out = subprocess.run(
                [sys.executable, __file__, case, variant], capture_output=True, text=True
            )
            if out.returncode != 0:
                print(f"{case:<10} {variant:<7} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{case:<10} {variant:<7} {r['added_mb']:>13.0f} {r['seconds']:>8.2f}  "
                f"{r['outcome']}"
            )


if __name__ == "__main__":
    main()
