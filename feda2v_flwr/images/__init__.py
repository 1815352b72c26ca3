"""Pictures of what the adapters produce: diffusion pipelines, CLIP zero-shot scoring, grids.

diffusers (the ``diffusion`` extra) is imported only when a pipeline is loaded.
"""

from feda2v_flwr.images.grid import save_grid
from feda2v_flwr.images.pipelines import PROFILE_DEFAULTS, ImageGenerator
from feda2v_flwr.images.scoring import ZeroShotClassifier, image_metrics

__all__ = ["PROFILE_DEFAULTS", "ImageGenerator", "ZeroShotClassifier", "image_metrics", "save_grid"]
