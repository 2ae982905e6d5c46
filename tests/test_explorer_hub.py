"""Choosing the released MSAE checkpoint for a CLIP model from the Hub repo's file list (offline:
the list is the repo's layout written out here; nothing is downloaded)."""

from __future__ import annotations

import pytest

from sae_explorer import hub

TAIL_L = "cc3m_ViT-L~14_train_image_2905936_768"
TAIL_B = "cc3m_ViT-B~16_train_image_2905936_512"
REPO_FILES = [
    ".gitattributes",
    "README.md",
    f"ViT-L_14/centered/24576_768_TopKReLU_64_RW_False_False_0.0_{TAIL_L}.pth",
    f"ViT-L_14/centered/6144_768_TopKReLU_64_UW_False_False_0.0_{TAIL_L}.pth",
    f"ViT-L_14/centered/6144_768_TopKReLU_64_RW_False_False_0.0_{TAIL_L}.pth",
    f"ViT-L_14/centered/Concept_Interpreter_6144_768_TopKReLU_64_RW_False_False_0.0_{TAIL_L}"
    "_disect_ViT-L~14_-1_text_20000_768.npy",
    f"ViT-L_14/centered/6144_768_ReLU_003_False_False_0.0_{TAIL_L}.pth",
    f"ViT-L_14/not_centered/6144_768_TopKReLU_64_RW_False_False_0.0_{TAIL_L}.pth",
    "ViT-L_14/centered/6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_text_1000_768.pth",
    f"ViT-B_16/centered/8192_512_TopKReLU_64_RW_False_False_0.0_{TAIL_B}.pth",
    f"ViT-B_16/centered/4096_512_TopKReLU_64_UW_False_False_0.0_{TAIL_B}.pth",
]


def test_parse_reads_the_msae_file_name():
    m = hub.describe_release_file(REPO_FILES[4])
    assert m is not None
    assert (m.n_latents, m.n_inputs, m.activation, m.weighting) == (6144, 768, "TopKReLU_64", "RW")
    assert (m.clip_tag, m.modality, m.centered) == ("ViT-L~14", "image", True)
    relu = hub.describe_release_file(REPO_FILES[6])
    assert relu is not None and (relu.activation, relu.weighting) == ("ReLU_003", None)
    assert hub.describe_release_file(REPO_FILES[5]) is None  # concept interpreter, not an SAE
    assert hub.describe_release_file("README.md") is None


@pytest.mark.parametrize("spelling", ["ViT-L-14", "ViT-L/14", "vit-l-14", "ViT-L~14"])
def test_picks_the_small_centered_matryoshka_image_sae_for_vit_l(spelling):
    chosen = hub.select_msae_checkpoint(REPO_FILES, spelling, 768)
    assert chosen.path == REPO_FILES[4]


def test_picks_rw_over_a_smaller_uw_for_vit_b():
    chosen = hub.select_msae_checkpoint(REPO_FILES, "ViT-B-16", 512)
    assert chosen.path == REPO_FILES[-2]


def test_no_checkpoint_for_another_model_says_what_is_available():
    with pytest.raises(ValueError, match=r"ViT-B-32.*none is for this model.*ViT-L~14 \(768-d\)"):
        hub.select_msae_checkpoint(REPO_FILES, "ViT-B-32", 512)


def test_wrong_embedding_size_is_named():
    with pytest.raises(ValueError, match=r"512-d embeddings \(they take \[768\]-d inputs\)"):
        hub.select_msae_checkpoint(REPO_FILES, "ViT-L-14", 512)


def test_non_openai_weights_are_refused():
    with pytest.raises(ValueError, match="trained on 'openai'"):
        hub.select_msae_checkpoint(REPO_FILES, "ViT-L-14", 768, pretrained="laion2b_s32b_b82k")


def test_empty_listing_is_an_error():
    with pytest.raises(ValueError, match="no MSAE checkpoint files"):
        hub.select_msae_checkpoint(["README.md"], "ViT-L-14", 768)


def test_msae_source_lists_the_repo_and_names_a_hub_source():
    asked = []

    def list_files(repo_id: str) -> list[str]:
        asked.append(repo_id)
        return REPO_FILES

    chosen, source = hub.msae_source("ViT-L-14", 768, list_files=list_files)
    assert asked == ["WolodjaZ/MSAE"]
    assert source == f"hf-hub:WolodjaZ/MSAE/{REPO_FILES[4]}"
    assert chosen.n_latents == 6144
