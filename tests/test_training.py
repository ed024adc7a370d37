"""The flow-matching training step on tiny models."""
import numpy as np
import torch

from curation import samples
from infu_model.tiny import tiny_base, tiny_infu
from infu_model.training import FlowBatch, InfUTrainable, flow_matching_loss, freeze, make_optimizer, sample_t


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
    trainable = InfUTrainable(net, proj)
    opt = make_optimizer(trainable.parameters(), "adamw", lr=3e-3)
    t = torch.tensor([0.6])
    noise = torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(60):
        loss = flow_matching_loss(pipe.transformer, trainable, batch, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        assert proj.proj_in.weight.grad is not None and net.controlnet_blocks[0].weight.grad is not None
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    assert all(torch.equal(v, pipe.transformer.state_dict()[k]) for k, v in base_before.items()), "the base is frozen"
    assert all(p.grad is None for p in pipe.transformer.parameters())
    assert np.isfinite(losses).all()


def test_bf16_base_with_fp32_trainables_gives_the_fp32_loss_within_bf16_rounding():
    """The shipped setup (frozen base in bfloat16, float32 InfuseNet + projection under autocast)
    on the CPU: the residuals enter the base in its dtype, the gradients reach the float32
    trainables, and the loss is the float32 formulation's to bf16 precision."""
    pipe = tiny_base()
    net, proj = tiny_infu(pipe.transformer, embedding_dim=128)
    trainable = InfUTrainable(net, proj)
    freeze(pipe.transformer)
    batch = _batch(pipe, proj)
    t, noise = torch.tensor([0.6]), torch.randn(batch.latents.shape, generator=torch.Generator().manual_seed(1))
    fp32 = flow_matching_loss(pipe.transformer, trainable, batch, t=t, noise=noise).item()
    pipe.transformer.to(torch.bfloat16)
    seen = []
    pipe.transformer.transformer_blocks[0].register_forward_hook(lambda m, a, out: seen.append(out[1].dtype))
    half = FlowBatch(**{**batch.__dict__, "latents": batch.latents.bfloat16(), "control": batch.control.bfloat16(),
                        "prompt_embeds": batch.prompt_embeds.bfloat16(), "pooled": batch.pooled.bfloat16()})
    loss = flow_matching_loss(pipe.transformer, trainable, half, t=t, noise=noise)
    loss.backward()
    assert loss.dtype == torch.float32 and abs(loss.item() - fp32) < 0.03 * fp32, (loss.item(), fp32)
    assert seen == [torch.bfloat16], "the base's hidden states stay bf16 (residuals cast to its dtype)"
    grads = [p.grad for p in trainable.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_zero_weight_samples_leave_the_loss_of_the_others():
    pipe = tiny_base()
    net, proj = tiny_infu(pipe.transformer, embedding_dim=128)
    trainable = InfUTrainable(net, proj)
    one = _batch(pipe, proj)
    two = FlowBatch(**{k: torch.cat([v, torch.zeros_like(v)]) if k in ("latents", "control", "id_embedding",
                                                                         "prompt_embeds", "pooled") else v
                       for k, v in one.__dict__.items()})
    two.weight = torch.tensor([1.0, 0.0])
    t, noise = torch.tensor([0.6, 0.3]), torch.randn((2, *one.latents.shape[1:]), generator=torch.Generator().manual_seed(1))
    alone = flow_matching_loss(pipe.transformer, trainable, one, t=t[:1], noise=noise[:1])
    assert torch.allclose(flow_matching_loss(pipe.transformer, trainable, two, t=t, noise=noise), alone, rtol=1e-5)
    two.weight = torch.zeros(2)
    zero = flow_matching_loss(pipe.transformer, trainable, two, t=t, noise=noise)
    zero.backward()
    assert zero.item() == 0 and all(p.grad is not None and not p.grad.any() for p in trainable.parameters())
