"""`facemogle demo`: a Gradio app to upload, paint or parse a mask, type a prompt, and get faces."""

from __future__ import annotations

import atexit
import functools
import os
import random
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from .edit import METHODS
from .io import atomic_write
from .labels import CLASSES, IMAGE_FORMATS, PALETTE, MaskError, colorize, load_mask, resize_labels

MAX_UPLOAD_BYTES = 10 * 2**20
MAX_UPLOAD_PIXELS = 4096 * 4096
CANVAS = 512
EXAMPLE_PROMPTS = [
    "She has long wavy blond hair and is wearing lipstick. She is smiling.",
    "He has short black hair and a big nose and is wearing eyeglasses.",
    "The woman has straight red hair and bangs and is wearing earrings and a necklace.",
    "He is bald and is smiling.",
]
SOURCES = ("Uploaded or example mask", "Painted mask", "No mask (text only)")
EDIT_OPERATIONS = {
    "Mask edit: paint the change on the mask": "mask",
    "Attribute edit: type it (e.g. make the hair blond)": "attribute",
    "Regenerate on the same layout": "regenerate",
}
DEFAULT_METHOD = "the edit's default"
# What the settings accept, in the page and from API callers alike: (lowest, highest)
STEPS, COUNT, GUIDANCE = (1, 50), (1, 8), (1.0, 6.0)


class DemoInputError(ValueError):
    """A user input the app rejects; shown in the page as a readable message."""


def example_masks() -> list[Path]:
    folder = Path(str(resources.files("facemogle") / "assets" / "examples"))
    return sorted(folder.glob("*.png"))


def read_upload(path: str | os.PathLike | None) -> np.ndarray | None:
    """An uploaded mask file → label map, with the demo's size caps."""
    if path is None:
        return None
    path = Path(path)
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise DemoInputError(
            f"The file is {path.stat().st_size / 2**20:.1f} MB; upload a mask under {MAX_UPLOAD_BYTES // 2**20} MB."
        )
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            pixels = image.width * image.height
    except Exception:  # noqa: BLE001 - load_mask below reports unreadable files precisely
        pixels = 0
    if pixels > MAX_UPLOAD_PIXELS:
        raise DemoInputError(f"The image has {pixels:,} pixels; upload a mask of at most 4096×4096.")
    return load_mask(path)


def read_painting(editor_value: dict | None) -> np.ndarray | None:
    """The painted canvas (its composite, in palette colours) → label map; None when nothing was painted."""
    if not editor_value or editor_value.get("composite") is None:
        return None
    composite = np.asarray(editor_value["composite"])[..., :3]
    if not composite.any():
        return None
    return load_mask(composite)


def choose_mask(source: str, upload_labels, painted) -> np.ndarray | None:
    if source == SOURCES[0]:
        if upload_labels is None:
            raise DemoInputError(
                "No mask uploaded: upload a mask, pick an example, or choose another mask source."
            )
        return upload_labels
    if source == SOURCES[1]:
        labels = read_painting(painted)
        if labels is None:
            raise DemoInputError("The canvas is empty: paint a mask, or choose another mask source.")
        return labels
    return None


def run(
    pipe,
    source,
    upload_labels,
    painted,
    prompt,
    text_guidance,
    mask_guidance,
    steps,
    seed,
    random_seed,
    count,
    *,
    folder: Path,
    watermark: bool = True,
):
    """Generate; returns (gallery images, downloadable files, status text). Raises DemoInputError on bad input.

    folder: where the downloadable files go; the previous call's files there are replaced. watermark: mark
    the faces (facemogle/watermark.py; 128² and up)."""
    _check_range("Steps", steps, STEPS)
    _check_range("Number of images", count, COUNT)
    _check_range("Text guidance", text_guidance, GUIDANCE)
    _check_range("Mask guidance", mask_guidance, GUIDANCE)
    prompt = (prompt or "").strip()
    labels = choose_mask(source, upload_labels, painted)
    if labels is None and not prompt:
        raise DemoInputError("Give a mask, a prompt, or both: there is nothing to generate from.")
    seed = random.randrange(2**31) if random_seed else int(seed)
    started = time.perf_counter()
    images = pipe(
        prompt=prompt or None, mask=labels, num_inference_steps=int(steps), text_guidance=float(text_guidance),
        mask_guidance=float(mask_guidance), seed=seed, num_images=int(count), fit="crop", progress=True,
        watermark=watermark,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    for old in folder.glob("face_*.png"):
        old.unlink()
    files = []
    for k, image in enumerate(images):
        files.append(str(folder / f"face_{seed}_{k}.png"))
        image.save(files[-1])
    gallery = (
        [colorize(labels).resize(images[0].size, Image.NEAREST)] if labels is not None else []
    ) + images
    status = f"{len(images)} image(s) in {seconds:.1f} s, seed {seed}"
    return gallery, files, status


def run_edit(
    pipe, face, source_labels, painted, operation, prompt, region, strength, steps, seed, method=DEFAULT_METHOD,
    *, folder: Path, watermark: bool = True,
):  # fmt: skip
    """Edit the loaded face; returns (gallery: source, masks, edit; downloadable files; status).

    face, source_labels: the face and its parsed mask (Load); painted: the mask canvas (the change, for a
    mask edit); region: an attribute edit's classes, comma-separated ("" = from the prompt); strength 0
    and method DEFAULT_METHOD take the operation's defaults."""
    from .edit import EditError

    if face is None or source_labels is None:
        raise DemoInputError("Load a face first: upload one, or use the last generated face.")
    _check_range("Steps", steps, STEPS)
    _check_range("Strength", strength, (0.0, 1.0))
    kind = EDIT_OPERATIONS[operation]
    mask = read_painting(painted) if kind == "mask" else None
    if kind == "mask" and mask is None:
        raise DemoInputError("The mask canvas is empty: load a face, then paint the change on its mask.")
    source_labels = resize_labels(source_labels, face.width)  # the canvas and the parse, at the face's size
    mask = resize_labels(mask, face.width) if mask is not None else None
    started = time.perf_counter()
    try:
        result = pipe.edit(
            face, operation=kind, mask=mask, source_mask=source_labels, prompt=(prompt or "").strip() or None,
            region=((region or "").strip() or None) if kind == "attribute" else None,
            strength=float(strength) or None, num_inference_steps=int(steps), seed=int(seed),
            method=None if method == DEFAULT_METHOD else method, watermark=watermark,
        )  # fmt: skip
    except EditError as error:
        raise DemoInputError(str(error)) from None
    for old in folder.glob("edit_*.png"):
        old.unlink()
    path = folder / f"edit_{int(seed)}.png"
    atomic_write(path, lambda temporary: result.images[0].save(temporary, format="PNG"))
    size = result.images[0].size
    gallery = [
        face.resize(size),
        colorize(result.source_labels),
        colorize(result.target_labels),
        result.images[0],
    ]
    status = (f"{result.operation} edit ({result.method}, strength {result.strength:g}) in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return [g.resize(size, Image.NEAREST) for g in gallery], [str(path)], status


def _check_range(name: str, value, bounds: tuple) -> None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoInputError(f"{name} must be a number, got {value!r}.") from None
    if not bounds[0] <= number <= bounds[1]:
        raise DemoInputError(f"{name} must be between {bounds[0]:g} and {bounds[1]:g}, got {value}.")


def legend_html() -> str:
    swatches = "".join(
        f'<span style="display:inline-block;margin:2px 6px"><span style="display:inline-block;width:14px;height:14px;'
        f'background:rgb{tuple(rgb)};border:1px solid #888;vertical-align:middle"></span> {k} {name}</span>'
        for k, (name, rgb) in enumerate(zip(CLASSES, PALETTE.tolist()))
    )
    return f'<div id="legend">{swatches}</div>'


def blank_canvas() -> np.ndarray:
    return np.zeros((CANVAS, CANVAS, 3), np.uint8)


def build_app(pipe, parser=None, watermark: bool = True):
    """The Gradio Blocks app. parser: a face parser (photo → label map; see `parsing.load_parser`), default
    the shipped SynthFace parser; watermark: mark the faces it makes (128² and up)."""
    import gradio as gr

    from .parsing import load_parser

    parser = parser if parser is not None else load_parser()

    def guarded(fn):
        @functools.wraps(fn)  # Gradio reads the signature (its progress tracker) through the wrapper
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (DemoInputError, MaskError, ValueError) as error:
                raise gr.Error(str(error), print_exception=False) from None

        return wrapper

    def on_upload(path):
        labels = read_upload(path)
        return labels, (colorize(labels) if labels is not None else None)

    def on_example(name):
        path = next(p for p in example_masks() if p.name == name)
        labels = load_mask(path)
        canvas = np.asarray(colorize(labels).resize((CANVAS, CANVAS), Image.NEAREST))
        return labels, colorize(labels), {"background": canvas, "layers": [], "composite": canvas}, SOURCES[0]

    def on_photo(path):
        if path is None:
            raise DemoInputError("Upload a face photo first.")
        labels = parse_photo(parser, open_photo(path))
        canvas = np.asarray(colorize(labels).resize((CANVAS, CANVAS), Image.NEAREST))
        return {"background": canvas, "layers": [], "composite": canvas}, SOURCES[1]

    outputs = Path(tempfile.mkdtemp(prefix="facemogle-demo-"))  # one folder for the app's downloads
    atexit.register(shutil.rmtree, outputs, ignore_errors=True)

    def on_generate(*inputs, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 - Gradio reads it from the default
        gallery, files, status = run(pipe, *inputs, folder=outputs, watermark=watermark)
        return gallery, files, status, Image.open(files[0]).convert("RGB")

    def on_face(path):
        if path is None:
            raise DemoInputError("Upload a face to edit.")
        return load_face(parser, open_photo(path))

    def on_last_face(face):
        if face is None:
            raise DemoInputError("Nothing generated yet: generate a face first, or upload one.")
        return load_face(parser, face)

    def on_edit(*inputs, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        return run_edit(pipe, *inputs, folder=outputs, watermark=watermark)

    # Gradio keeps its own copy of every file it serves: every 10 minutes, delete those over an hour old
    with gr.Blocks(title="facemogle", delete_cache=(600, 3600)) as app:
        gr.Markdown("# facemogle — faces from a mask, a prompt, or both; edit a face")
        upload_labels, last_face = gr.State(None), gr.State(None)
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column():
                    source = gr.Radio(list(SOURCES), value=SOURCES[0], label="Mask source")
                    with gr.Tab("Upload"):
                        upload = gr.File(
                            label="Mask (label PNG 0..18 or palette-coloured image)",
                            file_types=["image"],
                            elem_id="mask-upload",
                        )
                        preview = gr.Image(label="Mask", interactive=False, elem_id="mask-preview")
                        example = gr.Dropdown(
                            [p.name for p in example_masks()], value=None, label="Start from an example mask"
                        )
                    with gr.Tab("Paint"):
                        gr.HTML(legend_html())
                        painted = gr.ImageEditor(
                            value=blank_canvas(), type="numpy", image_mode="RGB", canvas_size=(CANVAS, CANVAS),
                            brush=gr.Brush(colors=[f"#{r:02x}{g:02x}{b:02x}" for r, g, b in PALETTE.tolist()], color_mode="fixed", default_size=12),
                            label="Paint with the class colours (see the legend)",
                        )  # fmt: skip
                    with gr.Tab("From a photo"):
                        photo = gr.File(
                            label="Face photo (PNG, JPEG or WEBP)",
                            file_types=[".png", ".jpg", ".jpeg", ".webp"],
                        )
                        parse = gr.Button("Parse the photo into an editable mask")
                    prompt = gr.Textbox(
                        label="Prompt", placeholder="e.g. " + EXAMPLE_PROMPTS[0], elem_id="prompt"
                    )
                    gr.Examples([[p] for p in EXAMPLE_PROMPTS], inputs=[prompt])
                    with gr.Accordion("Settings", open=False):
                        defaults = pipe.config.sampling  # the model's own sampling settings
                        text_guidance = gr.Slider(
                            *GUIDANCE, value=defaults.text_guidance, step=0.25, label="Text guidance"
                        )
                        mask_guidance = gr.Slider(
                            *GUIDANCE, value=defaults.mask_guidance, step=0.25, label="Mask guidance"
                        )
                        steps = gr.Slider(*STEPS, value=defaults.steps, step=1, label="Steps")
                        seed = gr.Number(0, precision=0, label="Seed")
                        random_seed = gr.Checkbox(False, label="Random seed")
                        count = gr.Slider(*COUNT, value=2, step=1, label="Number of images")
                    generate = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column():
                    gallery = gr.Gallery(label="Mask and generated faces", columns=3, elem_id="results")
                    status = gr.Markdown(elem_id="status")
                    files = gr.File(label="Download", file_count="multiple")
        with gr.Tab("Edit a face"):
            face_state, face_labels = gr.State(None), gr.State(None)
            with gr.Row():
                with gr.Column():
                    face_file = gr.File(
                        label="Face to edit (PNG, JPEG or WEBP)",
                        file_types=[".png", ".jpg", ".jpeg", ".webp"],
                        elem_id="edit-face",
                    )
                    use_last = gr.Button("Use the last generated face")
                    gr.HTML(legend_html())
                    edit_canvas = gr.ImageEditor(
                        value=blank_canvas(),
                        type="numpy",
                        image_mode="RGB",
                        canvas_size=(CANVAS, CANVAS),
                        brush=gr.Brush(
                            colors=[f"#{r:02x}{g:02x}{b:02x}" for r, g, b in PALETTE.tolist()],
                            color_mode="fixed",
                            default_size=12,
                        ),
                        label="Its parsed mask: paint the change here (mask edit)",
                    )
                    operation = gr.Radio(
                        list(EDIT_OPERATIONS), value=next(iter(EDIT_OPERATIONS)), label="Edit"
                    )
                    edit_region = gr.Textbox(
                        label="Region (attribute edit; comma-separated classes, empty: from the prompt)",
                        placeholder="e.g. hair",
                    )
                    edit_prompt = gr.Textbox(
                        label="Prompt", placeholder="e.g. make the hair blond", elem_id="edit-prompt"
                    )
                    strength = gr.Slider(
                        0.0, 1.0, value=0.0, step=0.05, label="Strength (start time; 0: the edit's default)"
                    )
                    edit_method = gr.Dropdown(
                        [DEFAULT_METHOD, *dict.fromkeys(m for ms in METHODS.values() for m in ms)],
                        value=DEFAULT_METHOD,
                        label="Method ("
                        + "; ".join(f"{op}: {', '.join(methods)}" for op, methods in METHODS.items())
                        + ")",
                    )
                    edit_steps = gr.Slider(*STEPS, value=pipe.config.sampling.steps, step=1, label="Steps")
                    edit_seed = gr.Number(0, precision=0, label="Seed")
                    edit_button = gr.Button("Edit", variant="primary", elem_id="edit")
                with gr.Column():
                    edit_gallery = gr.Gallery(
                        label="Source | source mask | target mask | edit", columns=4, elem_id="edit-results"
                    )
                    edit_status = gr.Markdown(elem_id="edit-status")
                    edit_files = gr.File(label="Download", file_count="multiple")
        upload.upload(guarded(on_upload), upload, [upload_labels, preview]).success(
            lambda: SOURCES[0], None, source
        )
        example.change(guarded(on_example), example, [upload_labels, preview, painted, source])
        parse.click(guarded(on_photo), photo, [painted, source])
        generate.click(
            guarded(on_generate),
            [
                source,
                upload_labels,
                painted,
                prompt,
                text_guidance,
                mask_guidance,
                steps,
                seed,
                random_seed,
                count,
            ],
            [gallery, files, status, last_face],
        )
        face_file.upload(guarded(on_face), face_file, [face_state, face_labels, edit_canvas])
        use_last.click(guarded(on_last_face), last_face, [face_state, face_labels, edit_canvas])
        edit_button.click(
            guarded(on_edit),
            [
                face_state,
                face_labels,
                edit_canvas,
                operation,
                edit_prompt,
                edit_region,
                strength,
                edit_steps,
                edit_seed,
                edit_method,
            ],
            [edit_gallery, edit_files, edit_status],
        )
    app.queue(default_concurrency_limit=1, max_size=32)
    return app


def open_photo(path: str | os.PathLike) -> Image.Image:
    """An uploaded face photo, decoded only if it is a PNG, JPEG or WEBP file."""
    if Path(path).stat().st_size > MAX_UPLOAD_BYTES:
        raise DemoInputError(f"The photo is over {MAX_UPLOAD_BYTES // 2**20} MB; upload a smaller one.")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise DemoInputError("The photo is over 4096×4096 pixels; upload a smaller one.")
            return image.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise DemoInputError(f"The photo is not a readable PNG, JPEG or WEBP image ({error}).") from None


def square(photo: Image.Image) -> Image.Image:
    """The photo centre-cropped to a square, RGB."""
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    return photo.convert("RGB").crop((left, top, left + side, top + side))


def load_face(parser, photo: Image.Image):
    """A face to edit (centre-cropped to a square), its parsed mask, and the mask as the editable canvas."""
    face = square(photo)
    labels = parse_photo(parser, face)
    canvas = np.asarray(colorize(labels).resize((CANVAS, CANVAS), Image.NEAREST))
    return face, labels, {"background": canvas, "layers": [], "composite": canvas}


def parse_photo(parser, photo: Image.Image) -> np.ndarray:
    """A face photo (centre-cropped to a square) → label map at the photo's side up to 512, as `facemogle
    parse` makes it (the shipped 64² parser's labels are scaled up: a 128² face gets a 128² mask)."""
    from .images import images_to_tensor
    from .parsing import parse_images

    photo = square(photo)
    size = min(photo.width, 512)
    return parse_images(parser, images_to_tensor([photo], size), size)[0]


def launch(
    model=None, host: str = "127.0.0.1", port: int = 7860, allow_remote: bool = False, parser_folder=None,
    watermark: bool = True,
):  # fmt: skip
    """Start the app; binding to anything but loopback needs allow_remote."""
    from .parsing import load_parser
    from .pipeline import FaceMoGLEPipeline

    if host not in ("127.0.0.1", "localhost", "::1") and not allow_remote:
        raise ValueError(
            f"Refusing to serve on {host}: the demo binds to 127.0.0.1 unless you pass --allow-remote."
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: the demo is reachable from other machines on {host}:{port}; anyone there can use it."
        )
    pipe = FaceMoGLEPipeline.from_pretrained(model)
    app = build_app(pipe, load_parser(parser_folder), watermark)
    app.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD_BYTES, show_error=True)
