"""Turn image tensors into a report :class:`~assay.results.Gallery` (PNG, base64).

The checks make galleries here, on the torch side, so the report only embeds the
strings it is given and never loads torch.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import torch
from PIL import Image

from ..errors import AssayValueError
from ..results import MAX_GALLERY_IMAGES, Gallery

IMAGE_SIZE = 72  # px: small inputs (8x8 digits, 28x28 MNIST) are upscaled to be seen


def png_base64(image: torch.Tensor, size: int = IMAGE_SIZE) -> str:
    """One [C, H, W] image in [0, 1] (C 1 or 3) as a base64 PNG, upscaled with nearest
    neighbour (pixels stay sharp) so its longer side is at least ``size``."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise AssayValueError(f"a gallery image must be [C, H, W] with C 1 or 3; got shape "
                              f"{list(image.shape)}. Fix: pass images shaped [N, C, H, W].")
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    array = pixels.permute(1, 2, 0).numpy()
    picture = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    scale = max(1, -(-size // max(picture.size)))  # ceil: whole pixels only
    picture = picture.resize((picture.width * scale, picture.height * scale),
                             Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def is_image_batch(x: torch.Tensor) -> bool:
    """Whether ``x`` is [N, C, H, W] with 1 or 3 channels (tabular data has no gallery)."""
    return x.dim() == 4 and x.shape[1] in (1, 3)


def gallery(title: str, images: torch.Tensor, captions: Sequence[str], *, columns: int = 8,
            bounds: tuple[float, float] = (0.0, 1.0), size: int = IMAGE_SIZE) -> Gallery:
    """A gallery of the first :data:`MAX_GALLERY_IMAGES` of ``images`` [N, C, H, W]
    within ``bounds`` (the model's input range), each with the caption of the same index."""
    if len(images) != len(captions):
        raise AssayValueError(f"gallery {title!r}: {len(images)} images but {len(captions)} "
                              "captions; give one caption per image.")
    count = min(len(images), MAX_GALLERY_IMAGES)
    low, high = bounds
    images = (images[:count] - low) / (high - low)
    # cut here, before encoding, with the same note the report's cap would write
    note = (f"{len(captions) - count} of {len(captions)} images dropped to keep the report "
            f"small (at most {MAX_GALLERY_IMAGES} per gallery)." if count < len(captions) else "")
    return Gallery(title, [png_base64(images[i], size) for i in range(count)],
                   list(captions[:count]), columns=columns, note=note)
