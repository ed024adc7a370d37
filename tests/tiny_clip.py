"""Tiny random CLIP models saved like the real ones (CLIPModel + CLIPProcessor folders), for
CLIPScore / PickScore / aesthetic tests; the tokenizer is built locally (byte-level BPE)."""
from __future__ import annotations

from pathlib import Path

import torch


def make_tiny_clip(out: Path, seed: int = 0, processor_apart: bool = False) -> tuple[Path, Path]:
    """(model folder, processor folder); with ``processor_apart`` the processor lives in its own
    folder, as PickScore's does (weights in PickScore_v1, processor in the LAION CLIP-H repo)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from infu_model.tiny import clip_tokenizer

    tok, vocab = clip_tokenizer()
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    model_dir = Path(out) / "model"
    proc_dir = Path(out) / ("processor" if processor_apart else "model")
    CLIPModel(cfg).eval().save_pretrained(model_dir)
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}), tokenizer=tok)
    proc.save_pretrained(proc_dir)
    return model_dir, proc_dir
