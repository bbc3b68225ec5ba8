"""Face parsers: the shipped one, SegFormer folders and BiSeNet weights saved like the real ones, bad parsers."""

import numpy as np
import pytest
import torch
from PIL import Image

from facemogle.cli import main
from facemogle.data.synthface import make_face
from facemogle.images import images_to_tensor
from facemogle.labels import CLASSES, load_mask
from facemogle.parsing import (
    BISENET_LABELS,
    BiSeNet,
    LabelledParser,
    ParserError,
    class_index,
    load_parser,
    parse_images,
)

# CelebAMask-HQ's order as the widely used SegFormer face parser names it (ours is the same order)
SEGFORMER_NAMES = ["background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
                   "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth"]  # fmt: skip


class OneHot(torch.nn.Module):
    """Logits that pick, at every pixel, the parser's own index given by `theirs` [H, W]."""

    def __init__(self, theirs: np.ndarray):
        super().__init__()
        self.theirs = torch.from_numpy(theirs).long()

    def forward(self, x):
        logits = torch.nn.functional.one_hot(self.theirs, 19).permute(2, 0, 1).float()[None]
        return logits.repeat(x.shape[0], 1, 1, 1)


def test_aliases_and_the_bisenet_order_map_onto_our_classes():
    assert class_index("eye_g") == CLASSES.index("eyeglasses") and class_index("ear_r") == CLASSES.index(
        "earring"
    )
    assert class_index("neck_l") == CLASSES.index("necklace") and class_index("Left Eye") == CLASSES.index(
        "left eye"
    )
    assert sorted(class_index(n) for n in BISENET_LABELS) == list(range(19))
    labels = make_face(27001)[1]
    theirs = np.array(
        [BISENET_LABELS.index(next(n for n in BISENET_LABELS if class_index(n) == c)) for c in range(19)]
    )[labels]
    parser = LabelledParser(OneHot(theirs), list(BISENET_LABELS), 64, (0, 0, 0), (1, 1, 1), lambda x: x)
    np.testing.assert_array_equal(parse_images(parser, torch.zeros(1, 3, 64, 64), 64)[0], labels)
    with pytest.raises(ParserError, match="not one of the 19 face classes"):
        class_index("beard")
    with pytest.raises(ParserError, match="each of the 19 face classes once"):
        LabelledParser(OneHot(theirs), ["skin"] * 19, 64, (0, 0, 0), (1, 1, 1), lambda x: x)


def test_a_segformer_folder_with_celebamask_names_parses_at_the_size_asked(tmp_path):
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                             hidden_sizes=[8, 16], num_attention_heads=[1, 1], decoder_hidden_size=16,
                             num_labels=19, id2label=dict(enumerate(SEGFORMER_NAMES)),
                             label2id={n: i for i, n in enumerate(SEGFORMER_NAMES)})  # fmt: skip
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "segformer")
    parser = load_parser(tmp_path / "segformer")
    assert isinstance(parser, LabelledParser) and parser.size == 512
    assert parser.to_ours.tolist() == list(range(19))  # the same order as ours, named the CelebAMask-HQ way
    labels = parse_images(parser, images_to_tensor([make_face(1)[0]], 96), 96)
    assert labels.shape == (1, 96, 96) and labels.dtype == np.uint8 and labels.max() < 19
    config.num_labels, config.id2label = 5, {i: SEGFORMER_NAMES[i] for i in range(5)}
    SegformerForSemanticSegmentation(config).save_pretrained(tmp_path / "five")
    with pytest.raises(ParserError, match="19 face classes"):
        load_parser(tmp_path / "five")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParserError, match="not a loadable SegformerForSemanticSegmentation"):
        load_parser(tmp_path / "empty")


def test_bisenet_weights_load_safely_and_parse_at_512(tmp_path):
    torch.manual_seed(0)
    network = BiSeNet().eval()
    torch.save({f"module.{k}": v for k, v in network.state_dict().items()}, tmp_path / "79999_iter.pth")
    parser = load_parser(tmp_path / "79999_iter.pth")
    image = images_to_tensor([make_face(2, size=128)[0]], 512)
    labels = parse_images(parser, image, 512)
    with torch.no_grad():
        logits = network((((image + 1) / 2) - parser.mean) / parser.std)  # [1, 19, 64, 64]
    assert logits.shape == (1, 19, 64, 64) and labels.shape == (1, 512, 512)
    theirs = torch.nn.functional.interpolate(logits, size=512, mode="bilinear").argmax(1)[0].numpy()
    np.testing.assert_array_equal(labels[0], parser.to_ours.numpy()[theirs])  # mapped, not reordered wrongly


@pytest.mark.parametrize("kind", ["other", "corrupt", "pickle", "missing"])
def test_a_parser_file_of_another_kind_gets_a_clear_error(tmp_path, kind):
    path = tmp_path / "parser.pth"
    if kind == "other":
        torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    elif kind == "corrupt":
        path.write_bytes(b"\x80\x04 not a zip")
    elif kind == "pickle":
        import pickle

        path.write_bytes(pickle.dumps(ParserError))  # a class: refused by weights_only
    with pytest.raises(ParserError, match="BiSeNet|does not exist|not a readable"):
        load_parser(path if kind != "missing" else tmp_path / "nothing.pth")


def test_a_parsed_photo_of_any_size_is_repainted_and_edited(tmp_path, capsys):
    """parse gives the mask at the photo's size, which is what edit --mask (and --save-masks) take."""
    from facemogle.data.pairs import make_pair
    from facemogle.labels import save_mask
    from facemogle.pipeline import default_model_folder, read_config

    pair = make_pair(0, "hat", size=192)  # not the shipped model's 128²
    pair.source.save(tmp_path / "face.png")
    assert main(["parse", str(tmp_path / "face.png"), "--out", str(tmp_path / "mask.png")]) == 0
    parsed = load_mask(tmp_path / "mask.png")
    assert parsed.shape == (192, 192)
    new = parsed.copy()
    new[pair.target_labels == CLASSES.index("hat")] = CLASSES.index("hat")
    save_mask(new, tmp_path / "new.png")
    assert main(["edit", "--image", str(tmp_path / "face.png"), "--mask", str(tmp_path / "new.png"), "--steps", "2",
                 "--out", str(tmp_path / "edit.png"), "--save-masks", "--no-watermark"]) == 0  # fmt: skip
    assert load_mask(tmp_path / "edit_target_mask.png").shape == (192, 192)
    # the edit is at the photo's size (the shipped model makes 128²), and without --source-mask the photo is
    # parsed as `parse` parsed it: only the repainted hat changes, the rest is the photo's own pixels
    edit, photo = (np.asarray(Image.open(tmp_path / n), np.int16) for n in ("edit.png", "face.png"))
    assert edit.shape == photo.shape == (192, 192, 3)
    changed = np.abs(edit - photo).max(-1) > 0
    config = read_config(default_model_folder())
    band = 2 * 192 * config["patch_size"] // config["resolution"]  # two tokens at the photo's size: 24 px
    repainted = (
        torch.nn.functional.max_pool2d(
            torch.from_numpy(new != parsed).float()[None, None], 2 * band + 1, 1, band
        )[0, 0].numpy()
        > 0
    )  # the repaint grown by two tokens: the growth rounded to whole tokens, and the feather
    assert changed.any() and not (changed & ~repainted).any()


def test_parse_cli_writes_a_label_png_and_refuses_to_overwrite(tmp_path, capsys):
    image, labels = make_face(27002)[:2]
    image.save(tmp_path / "face.png")
    assert main(["parse", str(tmp_path / "face.png"), "--out", str(tmp_path / "mask.png")]) == 0
    parsed = load_mask(tmp_path / "mask.png")
    assert parsed.shape == (64, 64) and (parsed == labels).mean() > 0.9
    assert main(["parse", str(tmp_path / "face.png"), "--out", str(tmp_path / "mask.png")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["parse", str(tmp_path / "face.png"), "--out", str(tmp_path / "face.png"), "--overwrite"]) == 2
    )
    assert "is an input" in capsys.readouterr().err
    assert main(["parse", str(tmp_path / "face.png"), "--out", str(tmp_path / "m0.png"), "--size", "0"]) == 2
    assert "16–4096" in capsys.readouterr().err
    assert main(["parse", str(tmp_path / "face.png"), "--out", str(tmp_path / "m.jpg")]) == 2
    assert (
        main(
            [
                "parse",
                str(tmp_path / "face.png"),
                "--out",
                str(tmp_path / "m.png"),
                "--parser",
                str(tmp_path / "none"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
