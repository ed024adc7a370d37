"""Tiny random captioners saved in their real on-disk formats, tokenizers built locally."""
from __future__ import annotations

from pathlib import Path

import torch


def _byte_vocab(specials: list[str]) -> dict[str, int]:
    from tokenizers import pre_tokenizers

    vocab = {s: i for i, s in enumerate(specials)}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c, len(vocab))
    return vocab


def make_tiny_blip2(path: Path) -> Path:
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, GPT2Tokenizer, OPTConfig)

    vocab = _byte_vocab(["<pad>", "</s>", "<unk>", "<image>"])
    tok = GPT2Tokenizer(vocab=vocab, merges=[], unk_token="<unk>", bos_token="</s>", eos_token="</s>", pad_token="<pad>")
    cfg = Blip2Config(
        vision_config=Blip2VisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                        num_attention_heads=4, image_size=32, patch_size=8),
        qformer_config=Blip2QFormerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                          intermediate_size=37, encoder_hidden_size=32, vocab_size=100),
        text_config=OPTConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, ffn_dim=37,
                              num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=32,
                              bos_token_id=1, eos_token_id=1, pad_token_id=0,
                              tie_word_embeddings=False),  # tied, a random LM repeats its last input token
        num_query_tokens=4, image_token_index=3)
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(cfg).save_pretrained(path)
    Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tok,
                   num_query_tokens=4).save_pretrained(path)
    return path


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def make_tiny_chat_vlm(path: Path) -> Path:
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, GPT2Tokenizer, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    vocab = _byte_vocab(["<pad>", "</s>", "<unk>", "<image>", "<|user|>", "<|assistant|>"])
    tok = GPT2Tokenizer(vocab=vocab, merges=[], unk_token="<unk>", bos_token="</s>", eos_token="</s>", pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>", "<|user|>", "<|assistant|>"]})
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                                       image_size=32, patch_size=8, projection_dim=32),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                bos_token_id=1, eos_token_id=1, pad_token_id=0),
        image_token_index=3, vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                   tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", chat_template=CHAT_TEMPLATE,
                   image_token="<image>", num_additional_image_tokens=1).save_pretrained(path)
    return path


INTERNVL_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
                     "{% if c['type'] == 'image' %}<IMG_CONTEXT>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                     "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_internvl_tokenizer():
    """A byte-level tokenizer with InternVL's named image tokens, as the ``*-hf`` checkpoints carry them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = _byte_vocab(["<pad>", "</s>", "<unk>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>", "<|im_start|>",
                         "<|im_end|>"])
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", bos_token="</s>", eos_token="<|im_end|>", pad_token="<pad>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})


def make_tiny_internvl(path: Path, image_seq_length: int = 4) -> Path:
    """A random ``InternVLForConditionalGeneration`` in the converted ``*-hf`` layout: 32-px tiles of
    8-px patches, pixel-shuffled by 0.5 into 4 image tokens per tile."""
    import json

    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLVisionConfig, Qwen2Config
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    tok = tiny_internvl_tokenizer()
    vocab = tok.get_vocab()
    cfg = InternVLConfig(
        vision_config=InternVLVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                           num_attention_heads=4, image_size=32, patch_size=8),
        text_config=Qwen2Config(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                                bos_token_id=1, eos_token_id=vocab["<|im_end|>"], pad_token_id=0),
        image_token_id=tok.context_image_token_id, image_seq_length=4, downsample_ratio=0.5,
        tie_word_embeddings=False)  # tied, a random LM repeats its last input token
    torch.manual_seed(0)
    InternVLForConditionalGeneration(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.485, 0.456, 0.406],
                             image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"image_seq_length": image_seq_length,
                                                            "processor_class": "InternVLProcessor"}))
    (path / "chat_template.jinja").write_text(INTERNVL_TEMPLATE)
    return path
