"""``app.py``'s command line: flags and environment variables generated from the configs, flags
winning, bad values named, the README's table true, and ``--help`` without torch or gradio."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import fields

import pytest

import app
from sae_explorer.cli import env_name
from sae_explorer.startup_config import ENV_PREFIX, StartupConfig

HEAVY = ("torch", "gradio", "open_clip")


def test_cli_flags_override_environment():
    environ = {"SAE_EXPLORER_CLIP": "ViT-B-16", "SAE_EXPLORER_STRICT": "true"}
    startup, serve = app.parse_args(
        ["--sae", "/x/sae", "--max-items", "0", "--port", "7999"], environ
    )
    assert (startup.clip, startup.sae, startup.strict, startup.max_items) == (
        "ViT-B-16",
        "/x/sae",
        True,
        None,
    )
    assert serve.port == 7999
    assert app.parse_args(["--demo"], {}).startup.demo
    assert not app.parse_args(["--no-strict"], environ).startup.strict


def test_serving_flags_read_gradios_variables():
    environ = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7861"}
    assert app.parse_args([], environ).serve == app.ServeConfig(host="0.0.0.0", port=7861)
    assert app.parse_args([], {}).serve == app.ServeConfig()
    assert app.parse_args([], {}).startup == StartupConfig()


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {"SAE_EXPLORER_DEMO": "maybe"}, "SAE_EXPLORER_DEMO='maybe': use 1/0"),
        ([], {"SAE_EXPLORER_MAX_ITEMS": "many"}, "SAE_EXPLORER_MAX_ITEMS='many': give a whole"),
        (["--max-items", "-3"], {}, "argument --max-items: '-3': give a whole number"),
        (["--port", "x"], {}, "argument --port: invalid int value: 'x'"),
    ],
)
def test_bad_values_are_named(capsys, argv, environ, message):
    with pytest.raises(SystemExit) as exit_:
        app.parse_args(argv, environ)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_none_words_mean_none():
    startup, _ = app.parse_args(["--pretrained", "none", "--max-items", "all"], {})
    assert (startup.pretrained, startup.max_items) == (None, None)


def test_the_readme_table_lists_every_flag_and_variable(repo_dpath):
    readme = (repo_dpath / "README.md").read_text()
    table = readme.split("### Configuration", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| (?:`(\w+)`)? *\|", table, flags=re.M)
    documented = {flag: env or None for flag, env in rows}
    generated = {}
    for cls, prefix in ((StartupConfig, ENV_PREFIX), (app.ServeConfig, None)):
        for f in fields(cls):
            generated["--" + f.name.replace("_", "-")] = env_name(f, prefix)
    assert documented == generated
    help_text = " ".join(app.build_parser({}).format_help().split())  # unwrapped
    assert all(f"env {env}" in help_text for env in generated.values() if env)


def test_help_imports_nothing_heavy(repo_dpath):
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "app.py", "--help"],
        cwd=repo_dpath,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "SAE_EXPLORER_CLIP" in out.stdout and "--concurrency" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert heavy == [], f"--help imported {heavy[:5]}"
