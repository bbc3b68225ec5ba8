"""Invisible watermarks for generated faces: facemogle's own 32 bits spread over the luminance (128² and up),
and, from 256² (the full scale's outputs, and edits of photos that large), invisible-watermark's DWT-DCT-SVD
mark of the same payload too.

Each bit k has a pattern P_k: Gaussian noise from a fixed seed, band-passed to 0.04–0.22 cycles per pixel
(the band JPEG at quality 75 and 2× down- and up-scaling keep) on a canonical 128² grid, orthonormalised,
unit RMS. Marking adds Σ_k a_k P_k, resized to the image, to R, G and B alike, with
a_k = s_k·max(0, STRENGTH − s_k·h_k) (s_k = ±1 for the bit, h_k what the image itself projects on P_k:
informed embedding, so the face's own content never flips a bit and no more is added than needed).
Reading resizes the image to 128² (area averaging), band-passes its luminance the same way and takes each
bit as the sign of its correlation with P_k. The payload is the ASCII "FMGL"; the image reads as marked
when at least DECISION of the 32 bits match it. Were an unmarked image's bits fair coins, that would happen
with probability P(Binomial(32, ½) ≥ 28) ≈ 1e-5; aligned faces' bits are not (the face's layout projects
on some patterns: each bit agrees with the payload on 19–68% of unmarked SynthFace faces), so the rate is
measured instead (benchmarks/bench_watermark.py). A heavy crop misaligns the grid and reads as unmarked,
not as a false payload.

The library mark (invisible-watermark, the package diffusers marks SDXL's outputs with) sits in the
chrominance (YUV's U and V), ours in the luminance: neither disturbs the other. Its DWT-DCT-SVD method, not the
DWT-DCT one SDXL uses, which reads 74% of the bits of smooth SynthFace faces with no attack at all.

The seed is public: this marks images as facemogle's for honest pipelines; anyone can remove or forge it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import FaceMoGLEError

CANONICAL = 128  # the patterns' grid; images are marked and read through it
BITS = 32
PAYLOAD = np.unpackbits(np.frombuffer(b"FMGL", np.uint8)).astype(bool)  # [32]
DECISION = 28  # matching bits of 32 for "marked"
STRENGTH = 0.3  # each bit's projection after marking, in 0–255 luminance units
BAND = (0.04, 0.22)  # cycles per pixel on the canonical grid
SEED = 0xFACE  # public
LIBRARY_SIDE = 256  # invisible-watermark's smallest image
LIBRARY_METHOD = "dwtDctSvd"


class WatermarkError(FaceMoGLEError, ValueError):
    """An image the watermark cannot be written to or read from; the message says why."""


@dataclass
class WatermarkReading:
    bits: np.ndarray  # [32] bool, as read
    matching: int  # bits equal to the payload
    marked: bool  # matching ≥ DECISION

    @property
    def bit_accuracy(self) -> float:
        return self.matching / BITS


@functools.lru_cache(maxsize=1)
def patterns() -> np.ndarray:
    """The 32 bit patterns [32, 128, 128], band-passed and of unit RMS."""
    noise = np.random.default_rng(SEED).standard_normal((BITS, CANONICAL, CANONICAL))
    flat = band_pass(noise).reshape(BITS, -1)  # [32, 128·128]
    orthonormal = np.linalg.qr(flat.T)[0].T  # still in the band: combinations of band-passed patterns
    return (orthonormal * CANONICAL).reshape(BITS, CANONICAL, CANONICAL)  # unit RMS


def band_pass(x: np.ndarray) -> np.ndarray:
    """Keep the frequencies of BAND (cycles per pixel) of [..., H, W] arrays."""
    fy = np.fft.fftfreq(x.shape[-2])[:, None]
    fx = np.fft.rfftfreq(x.shape[-1])[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    keep = (radius >= BAND[0]) & (radius <= BAND[1])
    return np.fft.irfft2(np.fft.rfft2(x) * keep, s=x.shape[-2:])


def projections(image: Image.Image) -> np.ndarray:
    """The band-passed luminance at 128² projected on each pattern [32] (in RMS units of the pattern)."""
    rgb = _rgb(image).resize((CANONICAL, CANONICAL), Image.BOX)
    luminance = np.asarray(rgb, np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.tensordot(patterns(), band_pass(luminance), axes=2) / CANONICAL**2


def mark(image: Image.Image, strength: float = STRENGTH) -> Image.Image:
    """The image with the payload added (an RGB copy; the input is not changed).

    Informed embedding: each bit's pattern is added just enough that the image's projection on it reaches
    strength with the bit's sign, whatever the face's own content projects there:
    a_k = s_k·max(0, strength − s_k·h_k)."""
    rgb = _rgb(image)
    signs = np.where(PAYLOAD, 1.0, -1.0)
    amplitudes = signs * np.maximum(0.0, strength - signs * projections(rgb))
    delta = np.tensordot(amplitudes, patterns(), axes=1)  # [128, 128]
    if rgb.size != (CANONICAL, CANONICAL):
        delta = np.asarray(Image.fromarray(delta.astype(np.float32), "F").resize(rgb.size, Image.BILINEAR))
    pixels = np.asarray(rgb, np.float64) + delta[..., None]
    marked = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    return _library_mark(marked) if min(marked.size) >= LIBRARY_SIDE else marked


def read(image: Image.Image) -> WatermarkReading:
    """The 32 bits read from an image of any size (resized to 128² first) and whether they are the payload."""
    bits = projections(image) > 0  # [32]
    matching = int((bits == PAYLOAD).sum())
    return WatermarkReading(bits, matching, matching >= DECISION)


def read_library(image: Image.Image) -> WatermarkReading | None:
    """invisible-watermark's 32 bits read from an image of 256² and up (None: smaller, or the package is not
    installed)."""
    rgb = _rgb(image)
    if min(rgb.size) < LIBRARY_SIDE or (library := _library()) is None:
        return None
    bits = np.array(library.WatermarkDecoder("bits", BITS).decode(_bgr(rgb), LIBRARY_METHOD), bool)
    matching = int((bits == PAYLOAD).sum())
    return WatermarkReading(bits, matching, matching >= DECISION)


def _library_mark(rgb: Image.Image) -> Image.Image:
    library = _library()
    if library is None:
        warnings.warn(
            "Marked with facemogle's watermark only: invisible-watermark is not installed "
            "(pip install 'facemogle[provenance]').",
            stacklevel=4,
        )
        return rgb
    encoder = library.WatermarkEncoder()
    encoder.set_watermark("bits", [int(b) for b in PAYLOAD])
    bgr = encoder.encode(_bgr(rgb), LIBRARY_METHOD)  # [H, W, 3] uint8, BGR as OpenCV's
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


@functools.lru_cache(maxsize=1)
def _library():
    try:
        import imwatermark
    except ImportError:
        return None
    return imwatermark


def _bgr(rgb: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])


def mark_all(images: list[Image.Image]) -> list[Image.Image]:
    """The images marked; images under 128² are returned unmarked, with a warning."""
    if min(images[0].size) < CANONICAL:
        warnings.warn(
            f"The {images[0].width}×{images[0].height} images are left unmarked: the watermark needs "
            f"{CANONICAL}² or more.",
            stacklevel=3,
        )
        return images
    return [mark(image) for image in images]


def _rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise WatermarkError(f"Expected a PIL image, got {type(image).__name__}.")
    if min(image.size) < CANONICAL:
        raise WatermarkError(
            f"The image is {image.width}×{image.height}: too small to carry the watermark ({CANONICAL} pixels a side "
            "at least; 64² faces, such as the previous default model's, are left unmarked)."
        )
    return image.convert("RGB")
