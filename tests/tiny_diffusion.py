"""Tiny randomly initialised diffusion pipelines and CLIP, saved like real local models.

Nothing is downloaded: the tokenizers are real CLIP (byte-level BPE) and T5 (unigram)
tokenizers over a character vocabulary, built in code. The dims are chosen to match
``conftest.save_tiny_text_encoders`` (CLIP hidden 32, T5 d_model 24), so text targets from those
encoders feed these pipelines; each pipeline's own ``text_encoder*`` / ``tokenizer*`` subfolders
can serve as target encoders too.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

TINY_SD_CLIP_DIM = 32  # SD: prompt_embeds (N, TINY_SD_TOKENS, 32) = the UNet's cross_attention_dim
TINY_SD_TOKENS = 77  # the tokenizer's model_max_length, as in Stable Diffusion 1.5
TINY_FLUX_CLIP_DIM = 32  # FLUX: pooled_prompt_embeds (N, 32) = the transformer's pooled_projection_dim
TINY_FLUX_T5_DIM = 24  # FLUX: prompt_embeds (N, L, 24) = the transformer's joint_attention_dim
TINY_IMAGE_SIZE = 32  # the tiny classifier's input resolution
# Two VAE blocks: a latent pixel covers 2x2 pixels; FLUX packs 2x2 latents, so its sizes are multiples of 4
# (StableDiffusionPipeline asks for multiples of 8 whatever its VAE).
TINY_VAE_SCALE = 2

_CHARS = string.ascii_lowercase + string.digits


def _clip_tokenizer() -> CLIPTokenizer:
    """CLIP's own tokenizer class over single characters (no merges): offline and lossless for
    lowercase words and digits."""
    specials = ["<|startoftext|>", "<|endoftext|>"]
    pieces = specials + list(_CHARS) + [f"{c}</w>" for c in _CHARS]
    return CLIPTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=TINY_SD_TOKENS)


def _t5_tokenizer() -> T5Tokenizer:
    """T5's own (unigram) tokenizer over single characters."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(c, -3.0) for c in _CHARS]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _clip_text_config(hidden_size: int, vocab_size: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=TINY_SD_TOKENS,
        projection_dim=hidden_size,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def _save_pipeline(pipeline, directory: Path) -> str:  # noqa: ANN001 (a diffusers pipeline)
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(directory)
    return str(directory)


def save_tiny_sd_pipeline(directory: Path) -> str:
    """A Stable-Diffusion-1.5-shaped pipeline (UNet, KL VAE, DDIM, CLIP text encoder), no safety checker."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    text_encoder = CLIPTextModel(_clip_text_config(TINY_SD_CLIP_DIM, len(tokenizer)))
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=TINY_SD_CLIP_DIM,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save_pipeline(pipeline, Path(directory))


def save_tiny_flux_pipeline(directory: Path) -> str:
    """A FLUX.1-schnell-shaped pipeline (no guidance embedding): transformer, flow-matching
    scheduler, FLUX-style VAE (no quant convs, shift factor), CLIP + T5 text encoders."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    tokenizer, tokenizer_2 = _clip_tokenizer(), _t5_tokenizer()
    text_encoder = CLIPTextModel(_clip_text_config(TINY_FLUX_CLIP_DIM, len(tokenizer)))
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=TINY_FLUX_T5_DIM,
            d_kv=8,
            d_ff=2 * TINY_FLUX_T5_DIM,
            num_layers=1,
            num_heads=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    latent_channels = 4
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,  # 2x2 packed latents
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_FLUX_T5_DIM,
        pooled_projection_dim=TINY_FLUX_CLIP_DIM,
        guidance_embeds=False,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=latent_channels,
        norm_num_groups=4,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1,
        scaling_factor=1.5,
    )
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    return _save_pipeline(pipeline, Path(directory))


def save_tiny_clip(directory: Path) -> str:
    """A tiny CLIPModel (text + 32x32 vision towers, projection 16) with its processor."""
    torch.manual_seed(0)
    tokenizer = _clip_tokenizer()
    text = _clip_text_config(32, len(tokenizer)).to_dict()
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=TINY_IMAGE_SIZE,
        patch_size=8,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    directory = Path(directory)
    model.save_pretrained(directory)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(directory)
    return str(directory)


def coloured_images(count: int, size: int = TINY_IMAGE_SIZE) -> list[Image.Image]:
    """``count`` distinct RGB test pictures: a colour ramp plus a diagonal gradient."""
    images = []
    for i in range(count):
        ramp = torch.linspace(0, 255, size)
        base = torch.tensor([(53 * i) % 256, (101 * i + 40) % 256, (197 * i + 80) % 256], dtype=torch.float32)
        pixels = (base[None, None, :] + ramp[:, None, None] * 0.5 + ramp[None, :, None] * 0.25) % 256
        images.append(Image.fromarray(pixels.to(torch.uint8).numpy()))
    return images
