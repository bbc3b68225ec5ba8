import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import face_like_labels, free_port
from PIL import Image

from facemogle.demo import (
    SOURCES,
    DemoInputError,
    choose_mask,
    example_masks,
    launch,
    parse_photo,
    read_painting,
    read_upload,
    run,
)
from facemogle.labels import PALETTE, MaskError, colorize, save_mask


def test_example_masks_ship_and_load():
    examples = example_masks()
    assert examples
    assert read_upload(examples[0]).dtype == np.uint8


def test_upload_caps_and_errors(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (4100, 4100)).save(big)
    with pytest.raises(DemoInputError, match="4096"):
        read_upload(big)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(MaskError, match="not a readable image"):
        read_upload(bad)
    assert read_upload(None) is None


def test_painting_and_source_choice():
    assert read_painting({"composite": np.zeros((8, 8, 3), np.uint8)}) is None
    canvas = PALETTE[face_like_labels(32)]
    labels = read_painting({"background": None, "layers": [], "composite": canvas})
    np.testing.assert_array_equal(labels, face_like_labels(32))
    with pytest.raises(DemoInputError, match="No mask uploaded"):
        choose_mask(SOURCES[0], None, None)
    with pytest.raises(DemoInputError, match="canvas is empty"):
        choose_mask(SOURCES[1], None, {"composite": np.zeros((8, 8, 3), np.uint8)})
    assert choose_mask(SOURCES[2], labels, None) is None


def test_run_generates_and_rejects_nothing_to_do(tiny_pipe, tmp_path):
    labels = face_like_labels(48)[:, 4:44]  # non-square: centre-cropped
    gallery, files, status = run(
        tiny_pipe, SOURCES[0], labels, None, "a smiling woman", 2, 1.5, 2, 3, False, 2, folder=tmp_path
    )
    assert len(gallery) == 3 and len(files) == 2 and "seed 3" in status
    assert Image.open(files[0]).size == (32, 32)
    with pytest.raises(DemoInputError, match="nothing to generate"):
        run(tiny_pipe, SOURCES[2], None, None, "  ", 2, 1.5, 2, 0, False, 1, folder=tmp_path)


def test_each_click_replaces_the_last_files_in_one_folder_and_settings_are_checked(tiny_pipe, tmp_path):
    labels = face_like_labels(32)
    run(tiny_pipe, SOURCES[0], labels, None, "", 2, 1.5, 2, 3, False, 2, folder=tmp_path)
    _, files, _ = run(tiny_pipe, SOURCES[0], labels, None, "", 2, 1.5, 2, 4, False, 1, folder=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [Path(f).name for f in files] == ["face_4_0.png"]
    for steps, count, guidance, name in (
        (500, 1, 2, "Steps"),
        (2, 64, 2, "Number of images"),
        (2, 1, 90, "Text guidance"),
        ("x", 1, 2, "Steps"),
    ):
        with pytest.raises(DemoInputError, match=name):
            run(
                tiny_pipe,
                SOURCES[0],
                labels,
                None,
                "",
                guidance,
                1.5,
                steps,
                0,
                False,
                count,
                folder=tmp_path,
            )


def test_only_png_jpeg_and_webp_are_ever_decoded(tmp_path):
    from unittest import mock

    from PIL import EpsImagePlugin

    from facemogle.demo import open_photo

    eps = tmp_path / "mask.png"  # an EPS file under an image name
    Image.new("L", (8, 8)).save(eps, format="EPS")
    with mock.patch.object(
        EpsImagePlugin.EpsImageFile, "_open", side_effect=AssertionError("EPS decoder ran")
    ) as opened:
        with pytest.raises(MaskError, match="PNG, JPEG, WEBP"):
            read_upload(eps)
        with pytest.raises(DemoInputError, match="not a readable PNG, JPEG or WEBP"):
            open_photo(eps)
    assert not opened.called
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.webp")
    assert open_photo(tmp_path / "photo.webp").size == (8, 8)


def test_parse_photo_gives_editable_mask():
    from facemogle.evaluators.networks import EvaluatorConfig, FaceParser

    parser = FaceParser(EvaluatorConfig("parser", 32)).eval()
    labels = parse_photo(parser, Image.new("RGB", (60, 40), (200, 150, 120)))
    assert labels.shape == (40, 40) and labels.max() < 19  # the square crop's side, not the parser's 32
    assert parse_photo(parser, Image.new("RGB", (128, 128))).shape == (128, 128)  # the v2 model's faces
    assert parse_photo(parser, Image.new("RGB", (700, 600))).shape == (512, 512)


def test_remote_host_needs_flag():
    with pytest.raises(ValueError, match="--allow-remote"):
        launch(host="0.0.0.0")


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian chromium not installed (apt-get install chromium)"
)
def test_browser_end_to_end(tiny_pipe, tmp_path):
    """Upload a mask, type a prompt, generate, check the result image; then a bad upload shows an error."""
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    from facemogle.demo import build_app
    from facemogle.evaluators.networks import EvaluatorConfig, FaceParser

    app = build_app(tiny_pipe, FaceParser(EvaluatorConfig("parser", 32)).eval())
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    mask = tmp_path / "mask.png"
    save_mask(face_like_labels(32), mask)
    bad = tmp_path / "bad.png"
    bad.write_text("this is not an image")
    face = tmp_path / "face.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(face)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=shutil.which("chromium"),
                args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.locator("#generate").wait_for(timeout=60000)
            page.locator("#mask-upload input[type=file]").set_input_files(str(mask))
            page.locator("#mask-preview img").wait_for(timeout=30000)
            page.locator("#prompt textarea").fill("She has long wavy blond hair and is smiling.")
            page.locator("#generate").click()
            page.locator("#status").get_by_text("image(s) in").wait_for(timeout=60000)
            sizes = page.locator("#results img").evaluate_all(
                "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])"
            )
            assert len(sizes) >= 3 and all(size == [32, 32] for size in sizes[1:])
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            page.reload(wait_until="load")  # a fresh upload box (a filled one hides its file input)
            page.locator("#mask-upload input[type=file]").set_input_files(str(bad))
            page.get_by_text("not a readable image").first.wait_for(timeout=30000)
            # the app keeps serving after the error: text-only generation still works
            page.get_by_label("No mask (text only)").check()
            page.locator("#prompt textarea").fill("He is bald and is smiling.")
            page.locator("#generate").click()
            page.locator("#status").get_by_text("image(s) in").wait_for(timeout=60000)
            # the Edit tab: upload a face, regenerate it on its parsed layout
            page.get_by_role("tab", name="Edit a face").click()
            page.locator("#edit-face input[type=file]").set_input_files(str(face))
            page.get_by_label("Regenerate on the same layout").check()
            page.locator("#edit").click()
            page.locator("#edit-status").get_by_text("regenerate edit").wait_for(timeout=60000)
            assert page.locator("#edit-results img").count() >= 4
            browser.close()
    finally:
        app.close()


def test_the_settings_start_at_the_models_sampling_defaults():
    import dataclasses

    from facemogle.demo import build_app
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.init("tiny")
    pipe.config.sampling = dataclasses.replace(
        pipe.config.sampling, steps=28, text_guidance=1.0, mask_guidance=2.5
    )
    values = {
        c["props"].get("label"): c["props"].get("value")
        for c in build_app(pipe).config["components"]
        if "props" in c
    }
    assert (values["Steps"], values["Text guidance"], values["Mask guidance"]) == (28, 1.0, 2.5)


def test_gradio_deletes_the_files_it_served():
    from facemogle.demo import build_app
    from facemogle.pipeline import FaceMoGLEPipeline

    assert build_app(FaceMoGLEPipeline.init("tiny")).delete_cache == (600, 3600)


def test_the_edit_tab_edits_a_loaded_face_and_rejects_bad_requests(tmp_path):
    from facemogle.data.pairs import make_pair
    from facemogle.demo import EDIT_OPERATIONS, load_face, run_edit
    from facemogle.parsing import load_parser
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe, parser = FaceMoGLEPipeline.from_pretrained(), load_parser()
    pair = make_pair(0, "eyeglasses", size=pipe.config.resolution)
    face, labels, canvas = load_face(parser, pair.source)
    side = pipe.config.resolution
    assert (
        face.size == (side, side)
        and labels.shape == (side, side)
        and canvas["composite"].shape == (512, 512, 3)
    )
    mask_edit, attribute, regenerate = EDIT_OPERATIONS
    painted = np.asarray(colorize(pair.target_labels).resize((512, 512), Image.NEAREST))
    gallery, files, status = run_edit(pipe, face, pair.source_labels, {"composite": painted}, mask_edit, "", "", 0, 3, 1,
                                      folder=tmp_path)  # fmt: skip
    assert len(gallery) == 4 and "mask edit (blend, strength 1)" in status and Path(files[0]).is_file()
    gallery, files2, status = run_edit(
        pipe, face, labels, canvas, regenerate, "", "", 0.5, 2, 2, folder=tmp_path
    )
    assert "strength 0.5" in status and not Path(files[0]).exists() and Path(files2[0]).is_file()
    _, _, status = run_edit(
        pipe, face, labels, canvas, regenerate, "", "", 0.5, 2, 2, "inversion", folder=tmp_path
    )
    assert "regenerate edit (inversion, strength 0.5)" in status  # the method selector
    with pytest.raises(DemoInputError, match="does not apply to a regenerate edit"):
        run_edit(pipe, face, labels, canvas, regenerate, "", "", 0, 2, 0, "flowedit", folder=tmp_path)
    with pytest.raises(DemoInputError, match="Load a face first"):
        run_edit(pipe, None, None, canvas, regenerate, "", "", 0, 2, 0, folder=tmp_path)
    with pytest.raises(DemoInputError, match="canvas is empty"):
        run_edit(pipe, face, labels, {"composite": np.zeros((512, 512, 3), np.uint8)}, mask_edit, "", "", 0, 2, 0,
                 folder=tmp_path)  # fmt: skip
    with pytest.raises(DemoInputError, match="removals are mask edits"):
        run_edit(pipe, face, labels, canvas, attribute, "remove the glasses", "", 0, 2, 0, folder=tmp_path)
    with pytest.raises(DemoInputError, match="Unknown class 'beard'"):
        run_edit(pipe, face, labels, canvas, attribute, "blond", "beard", 0, 2, 0, folder=tmp_path)
    with pytest.raises(DemoInputError, match="Steps must be between"):
        run_edit(pipe, face, labels, canvas, regenerate, "", "", 0, 500, 0, folder=tmp_path)
