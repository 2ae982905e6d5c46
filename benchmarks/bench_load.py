"""Peak memory of ``load_sae`` against the checkpoint's own tensor bytes (target <= 1.3x).

Writes a 768 -> 24,576 SAE in each format the project reads from disk (project, MSAE .pth, SAELens,
OpenAI .pt, saev), then loads each in a fresh process: the peak resident memory the load adds (the
kernel's high-water mark, reset just before the load) divided by the bytes of the tensors in the
file. Run: ``python benchmarks/bench_load.py [--n-latents 24576] [--n-inputs 768]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_explorer import SAE, SAEConfig, save_sae  # noqa: E402

CHILD = r"""
import json, sys, time
import torch
from sae_explorer import load_sae

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

load_sae  # imports done before the baseline
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak-RSS high-water mark
t0 = time.perf_counter()
sae = load_sae(sys.argv[1])
seconds = time.perf_counter() - t0
print(json.dumps({"added": status("VmHWM:") - before, "seconds": seconds, "format": sae.source_format}))
"""


def write_all(dpath: Path, d: int, n: int) -> dict[str, tuple[Path, int]]:
    """One checkpoint per format; values are (path, tensor bytes in the file)."""
    gen = torch.Generator().manual_seed(0)
    w_ld = torch.randn(n, d, generator=gen) / d**0.5
    pre_b, lat_b = torch.randn(d, generator=gen) * 0.1, torch.randn(n, generator=gen) * 0.1
    out: dict[str, tuple[Path, int]] = {}

    def nbytes(tensors: dict) -> int:
        return sum(t.numel() * t.element_size() for t in tensors.values())

    sae = SAE.from_tensors(
        SAEConfig(d, n, activation="TopKReLU", k=64),
        {"pre_bias": pre_b, "encoder": w_ld.t(), "latent_bias": lat_b, "decoder": w_ld},
    )
    out["project"] = (save_sae(sae, dpath / "project"), nbytes(sae.tensors()))
    msae = {
        "pre_bias": pre_b,
        "encoder": w_ld.t().contiguous(),
        "latent_bias": lat_b,
        "decoder": w_ld,
    }
    fpath = dpath / f"{n}_{d}_TopKReLU_64_RW_False_False_0.0_bench_image.pth"
    torch.save(
        {"model": msae, "mean_center": torch.zeros(d), "scaling_factor": 1.0, "target_norm": 1.0},
        fpath,
    )
    out["msae"] = (fpath, nbytes(msae) + d * 4)
    lens = {"W_enc": w_ld.t().contiguous(), "W_dec": w_ld, "b_enc": lat_b, "b_dec": pre_b}
    (dpath / "saelens").mkdir()
    save_file(lens, str(dpath / "saelens/sae_weights.safetensors"))
    (dpath / "saelens/cfg.json").write_text(
        json.dumps(
            {
                "d_in": d,
                "d_sae": n,
                "architecture": "topk",
                "k": 64,
                "metadata": {"sae_lens_version": "6.54.12"},
            }
        )
    )
    out["saelens"] = (dpath / "saelens", nbytes(lens))
    openai = {
        "encoder.weight": w_ld,
        "decoder.weight": w_ld.t().contiguous(),
        "pre_bias": pre_b,
        "latent_bias": lat_b,
    }
    torch.save(openai, dpath / "openai.pt")
    out["openai"] = (dpath / "openai.pt", nbytes(openai))
    with open(dpath / "saev.pt", "wb") as fh:
        fh.write((json.dumps({"d_vit": d, "exp_factor": n // d}) + "\n").encode())
        torch.save(lens, fh)
    out["saev"] = (dpath / "saev.pt", nbytes(lens))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-inputs", type=int, default=768)
    parser.add_argument("--n-latents", type=int, default=24576)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = write_all(Path(tmp), args.n_inputs, args.n_latents)
        print(
            f"{args.n_inputs} -> {args.n_latents} latents; peak memory a load adds / tensor bytes (target <= 1.3x)"
        )
        print(f"{'format':<10} {'tensors MB':>10} {'added MB':>9} {'ratio':>6} {'load s':>7}")
        for name, (path, nbytes) in cases.items():
            run = subprocess.run(
                [sys.executable, "-c", CHILD, str(path)],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            )
            got = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"{name:<10} {nbytes / 1e6:>10.1f} {got['added'] / 1e6:>9.1f} {got['added'] / nbytes:>6.2f} {got['seconds']:>7.2f}"
            )


if __name__ == "__main__":
    main()
