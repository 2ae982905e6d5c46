"""``pip install .`` gives a library that loads its own built-in world (package data) from
outside the checkout, the ``sae-explorer`` console script, and the page (``explorer_ui``) with its
static files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_installed_package_loads_the_builtin_world(repo_dpath, tmp_path):
    src, site = tmp_path / "src", tmp_path / "site"  # a copy: setuptools builds inside it
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("sae_explorer", "explorer_ui"):
        shutil.copytree(repo_dpath / package, src / package, ignore=ignore)
    for fname in ("pyproject.toml", "README.md"):
        shutil.copy(repo_dpath / fname, src / fname)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    subprocess.run([*pip, str(src)], check=True, cwd=tmp_path)
    code = (
        "import sae_explorer; from sae_explorer import load_sae;"
        "from sae_explorer.encoder import load_encoder;"
        "s = load_sae('builtin:shapes'); e = load_encoder('builtin:shapes', device='cpu');"
        "print(sae_explorer.__file__, s.n_latents, tuple(s.encode(e.encode_texts(['a red circle'])).shape))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run_python(source: str) -> str:  # outside the checkout, with only the install on the path
        done = subprocess.run(
            [sys.executable, "-c", source], check=True, capture_output=True, text=True,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        return done.stdout

    out = run_python(code)
    assert out.startswith(str(site)) and out.split()[1:] == ["256", "(1,", "256)"]
    script = subprocess.run(
        [str(site / "bin" / "sae-explorer"), "--help"], capture_output=True, text=True, env=env
    )
    assert "convert" in script.stdout
    static = "from explorer_ui.wiring import static_text; print(static_text('thumbs.css'))"
    css = run_python(static)
    assert css == (repo_dpath / "explorer_ui" / "static" / "thumbs.css").read_text() + "\n"
    assert (site / "explorer_ui" / "static" / "thumbs_click.js").is_file()
