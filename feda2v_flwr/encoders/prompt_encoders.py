"""Diffusion-model prompt targets from transformers text encoders (profiles ``flux`` and ``sd``).

* ``flux``: slot ``clip`` = the pooled CLIP text embedding (FLUX's ``pooled_prompt_embeds``,
  768 for CLIP-L), slot ``t5`` = T5 encoder states of ``t5_sequence_length`` tokens (FLUX's
  ``prompt_embeds``, 17 x 4096 for T5-XXL in the original experiments).
* ``sd``: slot ``clip`` = CLIP's last hidden state over ``clip_sequence_length`` tokens
  (Stable Diffusion 1.5's ``prompt_embeds``, 77 x 768).

Models are hub ids or local ``save_pretrained`` directories; shapes come from their configs, so
slot sizes never have to be typed by hand. Missing models fail with advice on supplying them.
"""

from __future__ import annotations

import numpy as np
import torch

from feda2v_flwr.config.schema import TextEncoderSettings
from feda2v_flwr.encoders.pretrained import load_pretrained


def clip_hidden_size(settings: TextEncoderSettings) -> int:
    from transformers import CLIPTextConfig

    return int(load_pretrained("CLIP text config", settings.clip_model, CLIPTextConfig.from_pretrained).hidden_size)


def t5_hidden_size(settings: TextEncoderSettings) -> int:
    from transformers import T5Config

    return int(load_pretrained("T5 config", settings.t5_model, T5Config.from_pretrained).d_model)


def _token_ids(model: str, tokenizer: str | None, prompts: list[str], length: int) -> torch.Tensor:
    """(C, length) ids padded to ``length``, as the diffusion pipelines tokenize prompts."""
    from transformers import AutoTokenizer

    tok = load_pretrained("tokenizer", tokenizer or model, AutoTokenizer.from_pretrained)
    return tok(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")["input_ids"]


@torch.no_grad()
def encode_clip(settings: TextEncoderSettings, prompts: list[str], *, pooled: bool) -> np.ndarray:
    """(C, hidden) pooled embeddings, or (C, clip_sequence_length, hidden) token states.

    No attention mask: Stable Diffusion and FLUX encode padded prompts without one, and the
    padding positions of the token states are part of their ``prompt_embeds``."""
    from transformers import CLIPTextModel

    model = load_pretrained("CLIP text encoder", settings.clip_model, CLIPTextModel.from_pretrained).eval()
    out = model(
        input_ids=_token_ids(settings.clip_model, settings.clip_tokenizer, prompts, settings.clip_sequence_length)
    )
    return (out.pooler_output if pooled else out.last_hidden_state).float().numpy()


@torch.no_grad()
def encode_t5(settings: TextEncoderSettings, prompts: list[str]) -> np.ndarray:
    """(C, t5_sequence_length, d_model) T5 encoder states, unmasked like FLUX's ``prompt_embeds``."""
    from transformers import T5EncoderModel

    model = load_pretrained("T5 encoder", settings.t5_model, T5EncoderModel.from_pretrained).eval()
    out = model(input_ids=_token_ids(settings.t5_model, settings.t5_tokenizer, prompts, settings.t5_sequence_length))
    return out.last_hidden_state.float().numpy()
