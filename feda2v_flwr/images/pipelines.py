"""Pictures from adapter outputs: Stable Diffusion 1.5 (profile ``sd``) and FLUX (profile ``flux``).

The adapters' outputs, mapped back to the text encoders' scale, replace the text encoders:

* ``sd``: ``prompt_embeds`` = slot ``clip``, (N, 77, 768) for SD 1.5. With guidance > 1 the
  pipeline encodes the empty prompt with its own CLIP text encoder for the unconditional half of
  classifier-free guidance, as Stable Diffusion does for text prompts (zeros would be an input
  the UNet never saw in training).
* ``flux``: ``prompt_embeds`` = slot ``t5``, (N, L, 4096), and ``pooled_prompt_embeds`` = slot
  ``clip``, (N, 768). FLUX's guidance is an embedded scalar, not classifier-free guidance, so
  nothing is ever encoded: the pipeline is loaded without its CLIP and T5 text encoders (T5-XXL
  alone is ~9.5 GB in bf16), and a local FLUX directory needs no ``text_encoder*`` folders.

Needs the ``diffusion`` extra (diffusers, accelerate).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from packaging.version import Version
from PIL import Image

from feda2v_flwr.config.schema import ImageSettings
from feda2v_flwr.encoders.pretrained import load_pretrained

log = logging.getLogger(__name__)

INSTALL_ADVICE = 'pip install "feda2v-flwr[diffusion]" (or pip install -e ".[diffusion]" from a checkout)'
DEFAULT_BATCH_SIZE = 8  # images per pipeline call unless images.low_memory


@dataclass(frozen=True)
class PipelineDefaults:
    model: str
    steps: int
    guidance_scale: float


# runwayml/stable-diffusion-v1-5 was taken off the hub in 2024; this is the official mirror of its files.
PROFILE_DEFAULTS: dict[str, PipelineDefaults] = {
    "sd": PipelineDefaults("stable-diffusion-v1-5/stable-diffusion-v1-5", steps=25, guidance_scale=7.5),
    "flux": PipelineDefaults("black-forest-labs/FLUX.1-schnell", steps=4, guidance_scale=0.0),
}


def import_diffusers() -> Any:
    """diffusers, after checking that accelerate (its fast loading and CPU offload) is there too."""
    try:
        import accelerate  # noqa: F401
        import diffusers
    except ImportError as err:
        raise ImportError(f"Drawing images needs the {err.name} package: {INSTALL_ADVICE}") from None
    return diffusers


def pipeline_dtype(profile: str, device: str, low_memory: bool) -> torch.dtype:
    """float32 unless ``low_memory``: then FLUX's native bfloat16, and float16 for SD on CUDA
    (its usual GPU precision). On CPU both run in bfloat16 (CPU kernels cover it; float16 ones
    are patchier)."""
    if not low_memory:
        return torch.float32
    if device.startswith("cuda") and profile == "sd":
        return torch.float16
    return torch.bfloat16


class ImageGenerator:
    """A diffusers pipeline that turns (N, ...) prompt embeddings into N pictures.

    ``low_memory``: half precision (``pipeline_dtype``), one image per pipeline call and, on
    CUDA, model CPU offload (each component moves to the GPU only while it runs). Otherwise
    float32 and ``batch_size`` images per call.

    Image ``i`` starts from noise drawn by a CPU generator seeded ``seed + i``: the same seed
    gives the same pictures whatever the batching (identical pixels on CPU in the tests; batched
    GPU kernels may round differently) and the same starting noise on every device. Half
    precision changes the pictures slightly.
    """

    def __init__(
        self, profile: str, settings: ImageSettings, device: str, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> None:
        if profile not in PROFILE_DEFAULTS:
            raise ValueError(f"Images need target profile 'sd' or 'flux', not '{profile}'")
        assert batch_size >= 1
        defaults = PROFILE_DEFAULTS[profile]
        self.profile = profile
        self.device = device
        self.model = settings.pipeline_model or defaults.model
        self.steps = settings.steps or defaults.steps
        self.guidance_scale = defaults.guidance_scale if settings.guidance_scale is None else settings.guidance_scale
        self.height, self.width = settings.height, settings.width
        self.low_memory = settings.low_memory
        self.batch_size = 1 if settings.low_memory else batch_size
        self.dtype = pipeline_dtype(profile, device, settings.low_memory)
        self.pipeline = self._load(import_diffusers())
        self._check_size()

    def _load(self, diffusers: Any) -> Any:
        if self.profile == "sd":
            # No safety checker: the pictures are for evaluation (CLIP zero-shot scoring), and a
            # checker that blacks out a picture would score it as a wrong class.
            cls, parts = diffusers.StableDiffusionPipeline, dict(safety_checker=None, feature_extractor=None)
            parts["requires_safety_checker"] = False
        else:
            cls = diffusers.FluxPipeline
            parts = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
        # diffusers 0.42 renamed torch_dtype to dtype (the old name still works, with a warning).
        parts["dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"] = self.dtype
        what = f"{cls.__name__} (a diffusers pipeline: model_index.json and a folder per component)"
        pipeline = load_pretrained(what, self.model, lambda model: cls.from_pretrained(model, **parts))
        if self.low_memory and self.device.startswith("cuda"):
            pipeline.enable_model_cpu_offload(device=self.device)
        else:
            pipeline.to(self.device)
        pipeline.set_progress_bar_config(disable=True)
        log.info(
            "Loaded %s '%s' on %s (%s, %d image(s) per call)",
            cls.__name__,
            self.model,
            self.device,
            str(self.dtype).removeprefix("torch."),
            self.batch_size,
        )
        return pipeline

    def _check_size(self) -> None:
        if self.profile == "flux":
            factor = self.pipeline.vae_scale_factor * 2  # FLUX packs 2x2 latents
        else:
            factor = max(8, self.pipeline.vae_scale_factor)  # StableDiffusionPipeline insists on multiples of 8
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and value % factor:
                raise ValueError(
                    f"images.{name} = {value} is not a multiple of {factor}, which the {self.profile} pipeline "
                    f"'{self.model}' needs: use {value - value % factor or factor} or {value - value % factor + factor}"
                )

    @property
    def slot_shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Per-image shape of each slot the pipeline takes (None: any token count)."""
        assert self.pipeline is not None, "the pipeline was released"
        if self.profile == "sd":
            # Stable Diffusion's own prompts are tokenized to model_max_length (77), and the
            # unconditional embedding is encoded to the same length.
            tokens = self.pipeline.tokenizer.model_max_length
            return {"clip": (tokens, self.pipeline.text_encoder.config.hidden_size)}
        config = self.pipeline.transformer.config  # CLIP-L hidden size / T5-XXL d_model for FLUX.1
        return {"clip": (config.pooled_projection_dim,), "t5": (None, config.joint_attention_dim)}

    def _checked(self, embeddings: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
        """The embeddings as (N, ...) tensors on the pipeline's device and dtype; wrong slots, shapes
        or values are ValueErrors that name what was expected."""
        expected = self.slot_shapes
        if set(embeddings) != set(expected):
            raise ValueError(
                f"The {self.profile} pipeline takes the slots {sorted(expected)}, got {sorted(embeddings)}"
            )
        tensors = {slot: torch.as_tensor(value) for slot, value in embeddings.items()}
        count = tensors["clip"].shape[0] if tensors["clip"].ndim else 0
        for slot, shape in expected.items():
            got = tuple(tensors[slot].shape)
            fits = len(got) == len(shape) + 1 and all(e is None or e == g for e, g in zip(shape, got[1:], strict=True))
            if not fits or got[0] != count or count == 0:
                wanted = ", ".join("L" if e is None else str(e) for e in shape)
                raise ValueError(
                    f"Slot '{slot}' for the {self.profile} pipeline '{self.model}' must have shape (N, {wanted}) with "
                    f"the same N >= 1 in every slot; got {got}. The adapters' targets must come from this "
                    "pipeline's text encoders (feda2v.text_encoders)."
                )
            if not torch.isfinite(tensors[slot]).all():
                raise ValueError(f"Slot '{slot}' holds NaN or infinite values; no picture can be drawn from it")
        return {slot: t.to(device=self.device, dtype=self.dtype) for slot, t in tensors.items()}

    def generate(self, embeddings: Mapping[str, torch.Tensor | np.ndarray], seed: int) -> list[Image.Image]:
        """One picture per row of the slots (``clip``; ``t5`` too for FLUX), seeded ``seed + row``."""
        assert self.pipeline is not None, "the pipeline was released"
        inputs = self._checked(embeddings)
        if self.profile == "sd":
            names = {"clip": "prompt_embeds"}
        else:
            names = {"t5": "prompt_embeds", "clip": "pooled_prompt_embeds"}
        count = inputs["clip"].shape[0]
        images: list[Image.Image] = []
        for start in range(0, count, self.batch_size):
            rows = range(start, min(start + self.batch_size, count))
            output = self.pipeline(
                **{names[slot]: value[rows.start : rows.stop] for slot, value in inputs.items()},
                # CPU generators: the starting noise is the same on every device.
                generator=[torch.Generator("cpu").manual_seed(seed + row) for row in rows],
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                height=self.height,
                width=self.width,
                output_type="pil",
            )
            images.extend(output.images)
        return images

    def release(self) -> None:
        """Drop the pipeline and give its memory back (CUDA cache included)."""
        if self.pipeline is None:
            return
        self.pipeline.remove_all_hooks()  # CPU offload's, if any
        self.pipeline = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> ImageGenerator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
