"""The flow-matching training step on tiny models."""
import numpy as np
import torch

from curation import samples
from infu_model.tiny import tiny_base, tiny_infu
from infu_model.training import FlowBatch, adamw, flow_matching_loss, freeze, sample_t


def _batch(pipe, proj):
    with torch.no_grad():
        img = pipe.image_processor.preprocess(samples.astronaut().resize((32, 32)))
        lat = pipe.vae.encode(img).latent_dist.mode()
        lat = (lat - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
        b, c, h, w = lat.shape
        packed = pipe._pack_latents(lat, b, c, h, w)
        prompt, pooled, text_ids = pipe.encode_prompt("a portrait photo", prompt_2=None, max_sequence_length=16)
        _, img_ids = pipe.prepare_latents(1, c, 32 * 1, 32 * 1, torch.float32, "cpu", torch.Generator().manual_seed(0))
    return FlowBatch(latents=packed, control=torch.zeros_like(packed),
                     id_embedding=torch.randn(1, proj.config.embedding_dim), prompt_embeds=prompt, pooled=pooled,
                     text_ids=text_ids, img_ids=img_ids)


def test_logit_normal_timesteps():
    t = sample_t(20000, torch.Generator().manual_seed(0))
    assert 0 < t.min() and t.max() < 1
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean()) < 0.03 and abs(logit.std() - 1) < 0.03


def test_overfitting_a_fixed_batch_drives_the_loss_down_and_only_infu_trains():
    pipe = tiny_base()
    net, proj = tiny_infu(pipe.transformer, embedding_dim=128)
    freeze(pipe.transformer)
    base_before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    batch = _batch(pipe, proj)
    opt = adamw(list(net.parameters()) + list(proj.parameters()), lr=3e-3)
    t = torch.tensor([0.6])
    noise = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(60):
        loss = flow_matching_loss(pipe.transformer, net, proj, batch, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        assert proj.proj_in.weight.grad is not None and net.controlnet_blocks[0].weight.grad is not None
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert all(torch.equal(v, pipe.transformer.state_dict()[k]) for k, v in base_before.items()), "the base is frozen"
    assert all(p.grad is None for p in pipe.transformer.parameters())
    assert np.isfinite(losses).all()
