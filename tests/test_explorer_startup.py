"""Start-up: environment variables, and the fallback to the built-in world when the Hub cannot be
reached (simulated by a file lister that raises; nothing is downloaded)."""

from __future__ import annotations

import pytest
from _explorer_helpers import builtin_world_trained

from sae_explorer import hub, startup_config
from sae_explorer.explorer_startup import (
    StartupConfig,
    StartupError,
    config_from_env,
    load_explorer,
)
from sae_explorer.worlds import shapes

needs_world = pytest.mark.skipif(
    not builtin_world_trained(), reason="needs the trained builtin:shapes models"
)


def test_defaults_are_the_real_hub_setup():
    cfg = config_from_env({})
    assert (cfg.clip, cfg.pretrained, cfg.sae) == ("ViT-L-14", "openai", "auto")
    assert cfg.corpus.startswith("hf:") and cfg.max_items == 500
    assert not cfg.demo and not cfg.strict


def test_environment_overrides_every_field():
    env = {
        "SAE_EXPLORER_CLIP": "ViT-B-16",
        "SAE_EXPLORER_PRETRAINED": "none",
        "SAE_EXPLORER_SAE": "/models/sae",
        "SAE_EXPLORER_CORPUS": "/data/images",
        "SAE_EXPLORER_MAX_ITEMS": "all",
        "SAE_EXPLORER_CACHE_DIR": "/tmp/c",
        "SAE_EXPLORER_DEVICE": "cuda",
        "SAE_EXPLORER_DEMO": "yes",
        "SAE_EXPLORER_STRICT": "1",
    }
    cfg = config_from_env(env)
    assert cfg == StartupConfig(
        clip="ViT-B-16",
        pretrained=None,
        sae="/models/sae",
        corpus="/data/images",
        max_items=None,
        cache_dir="/tmp/c",
        device="cuda",
        demo=True,
        strict=True,
    )


def test_bad_boolean_is_named():
    with pytest.raises(ValueError, match="SAE_EXPLORER_DEMO='maybe'"):
        config_from_env({"SAE_EXPLORER_DEMO": "maybe"})


def test_builtin_config_keeps_cache_and_device():
    cfg = StartupConfig(cache_dir="/tmp/x", device="cpu").builtin()
    assert (cfg.clip, cfg.sae, cfg.corpus, cfg.pretrained) == (
        "builtin:shapes",
        "builtin:shapes",
        startup_config.BUILTIN_CORPUS,
        None,
    )
    assert (cfg.cache_dir, cfg.device) == ("/tmp/x", "cpu")


def hub_down(repo_id: str) -> list[str]:
    raise OSError(f"cannot reach the Hugging Face Hub to list {repo_id}")


def hub_up() -> hub.HubStatus:
    """The start-up probe's answer: online (the failure comes later, from the lister)."""
    return hub.HubStatus(True)


def offline_cfg(tmp_path, **overrides) -> StartupConfig:
    """Auto SAE selection over the world's tiny CLIP architecture (loads without downloads)."""
    return StartupConfig(
        clip=shapes.CLIP_ARCH,
        pretrained=None,
        sae="auto",
        corpus="builtin:shapes?n=50",
        cache_dir=str(tmp_path),
        device="cpu",
        **overrides,
    )


def test_strict_raises_with_the_reason(tmp_path):
    with pytest.raises(StartupError, match="cannot reach the Hugging Face Hub"):
        load_explorer(offline_cfg(tmp_path, strict=True), list_files=hub_down, hub_status=hub_up)


def test_strict_reports_a_missing_match(tmp_path):
    def listing(repo_id: str) -> list[str]:
        return [
            "ViT-L_14/centered/6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_x_image_1_768.pth"
        ]

    with pytest.raises(StartupError, match="no released MSAE checkpoint matches"):
        load_explorer(offline_cfg(tmp_path, strict=True), list_files=listing, hub_status=hub_up)


@needs_world
def test_unreachable_hub_falls_back_to_the_builtin_world(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(startup_config, "BUILTIN_CORPUS", "builtin:shapes?n=100")
    with caplog.at_level("WARNING"):
        explorer = load_explorer(offline_cfg(tmp_path), list_files=hub_down, hub_status=hub_up)
    assert explorer.encoder.model_id == "builtin:shapes"
    assert explorer.sources.sae == "builtin:shapes"
    note = explorer.sources.note
    assert "cannot reach the Hugging Face Hub" in note and "OSError" not in note  # in words
    assert note.startswith(f"Could not load CLIP {shapes.CLIP_ARCH} + SAE auto over")  # tried
    assert "--demo" in note and "HF_HUB_OFFLINE=1" in note  # what to do
    assert "falling back to the built-in shapes world" in caplog.text
    assert len(explorer.items) == 200


@needs_world
def test_demo_goes_straight_to_the_builtin_world(tmp_path, monkeypatch):
    monkeypatch.setattr(startup_config, "BUILTIN_CORPUS", "builtin:shapes?n=100")
    called = []

    def status_spy() -> hub.HubStatus:
        called.append("hub_status")
        return hub.HubStatus(True)

    cfg = offline_cfg(tmp_path, demo=True)
    explorer = load_explorer(cfg, list_files=called.append, hub_status=status_spy)
    assert called == []  # the Hub is never asked: neither probed nor listed
    assert explorer.encoder.model_id == "builtin:shapes"
    assert explorer.sources.note == ""  # asked for: not a fallback warning
    assert "--demo" in explorer.sources.details["mode"]
