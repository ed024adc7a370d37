"""Tiny random FLUX + InfU in the real on-disk formats, for tests and the demo.

``make_tiny(dir)`` writes ``dir/base`` (a diffusers FLUX folder: transformer, VAE,
CLIP and T5 encoders with tokenizers built locally) and ``dir/infu_flux_v1.0/
{aes_stage2,sim_stage1}/{InfuseNetModel/ (sharded safetensors), image_proj_model.bin}``
— the published layout — with InfuseNet's output projections *not* zero, so the
identity visibly changes the output. The projection takes 128-d dlib descriptors
(the offline face backend); ``infu.json`` beside the variants says so.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from infu_model.infusenet import build_infusenet
from infu_model.pipeline import export_published
from infu_model.projection import ProjectionNetwork

TINY = dict(inner=32, heads=2, head_dim=16, double=2, single=4, text=32, latent_channels=16)


def clip_tokenizer():
    """A byte-level CLIP BPE tokenizer with no merges: every byte is a token."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77), len(vocab)


def t5_tokenizer():
    """A character-level Unigram T5 tokenizer (the T5 tokenizer's real model type)."""
    from transformers import T5TokenizerFast

    chars = [chr(c) for c in range(33, 127)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    return T5TokenizerFast(vocab=vocab, extra_ids=0, model_max_length=512), len(vocab)


def tiny_base(seed: int = 0):
    """A random FluxPipeline small enough for CPU tests (inner width 32, 2+4 blocks)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    t = TINY
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=t["latent_channels"] * 4, num_layers=t["double"], num_single_layers=t["single"],
        attention_head_dim=t["head_dim"], num_attention_heads=t["heads"], joint_attention_dim=t["text"],
        pooled_projection_dim=t["text"], guidance_embeds=True, axes_dims_rope=[4, 6, 6])
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], layers_per_block=1,
                        latent_channels=t["latent_channels"], norm_num_groups=4, scaling_factor=0.3611,
                        shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
    clip_tok, clip_vocab = clip_tokenizer()
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=clip_vocab, hidden_size=t["text"], intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
                                        projection_dim=t["text"], bos_token_id=0, eos_token_id=1, pad_token_id=1))
    t5_tok, t5_vocab = t5_tokenizer()
    t5 = T5EncoderModel(T5Config(vocab_size=t5_vocab, d_model=t["text"], d_ff=37, d_kv=8, num_layers=2,
                                 num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0))
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
                        vae=vae, text_encoder=clip, tokenizer=clip_tok, text_encoder_2=t5, tokenizer_2=t5_tok,
                        transformer=transformer)


def tiny_infu(transformer, seed: int = 1, embedding_dim: int = 128):
    """(InfuseNet, projection) for a tiny base, with non-zero residual projections."""
    torch.manual_seed(seed)
    infusenet = build_infusenet(transformer)
    proj = ProjectionNetwork(dim=32, depth=1, dim_head=8, heads=4, num_queries=8, embedding_dim=embedding_dim,
                             output_dim=transformer.config.joint_attention_dim, ff_mult=2)
    torch.nn.init.normal_(proj.proj_in.weight, std=3.0)  # face descriptors are small numbers: make them count
    for lin in [*infusenet.controlnet_blocks, *infusenet.controlnet_single_blocks, infusenet.controlnet_x_embedder]:
        torch.nn.init.normal_(lin.weight, std=0.2)
    # loud ID tokens: with random weights the 8 ID tokens get ~1% of the image tokens'
    # attention; large context keys/values let them steer the residuals, as trained ones do
    for block in infusenet.transformer_blocks:
        torch.nn.init.normal_(block.attn.add_k_proj.weight, std=1.0)
        torch.nn.init.normal_(block.attn.add_v_proj.weight, std=1.0)
        torch.nn.init.constant_(block.norm1.linear.bias, 1.0)  # open the attention gate (AdaLN)
    with torch.no_grad():
        proj.latents.zero_()  # queries that start equal let the ID embedding shape the tokens
    return infusenet, proj


TINY_FOLDERS = ("base", "infu_flux_v1.0")  # what make_tiny writes


def make_tiny(out: str | Path) -> dict[str, Path]:
    """Write the tiny base and both tiny InfU variants; returns their paths."""
    out = Path(out)
    base = tiny_base()
    base.save_pretrained(out / TINY_FOLDERS[0])
    infu = out / TINY_FOLDERS[1]
    for k, variant in enumerate(("aes_stage2", "sim_stage1")):
        infusenet, proj = tiny_infu(base.transformer, seed=1 + k)
        export_published(infusenet, proj, infu, variant, max_shard_size="100KB")
    (infu / "infu.json").write_text(json.dumps({"face_backend": "dlib"}))
    return {"base": out / "base", "infu": infu}
