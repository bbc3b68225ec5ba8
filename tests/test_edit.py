"""Editing: regions, the update rules, the three operations at the shipped model's configuration, bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from facemogle.data.pairs import make_pair
from facemogle.edit import (
    EditError,
    NoChangeError,
    attribute_classes,
    blended_sample,
    changed_attributes,
    feathered,
    flow_edit,
    invert,
    load_image,
    painted_on,
    sub_grid,
    token_region,
    token_weights,
)
from facemogle.flow import time_grid
from facemogle.labels import CLASSES
from facemogle.pipeline import FaceMoGLEPipeline, default_model_folder

HAIR = CLASSES.index("hair")
LIPS = ("upper lip", "lower lip")
SHIPPED = json.loads((default_model_folder() / "config.json").read_text())
SIDE, PATCH = SHIPPED["resolution"], SHIPPED["patch_size"]  # the shipped model's: the real configuration


@pytest.fixture(scope="module")
def shipped():
    return FaceMoGLEPipeline.from_pretrained()


@pytest.fixture(scope="module")
def glasses_pair():
    return make_pair(0, "eyeglasses", size=SIDE)  # A without eyeglasses, B with them, at the shipped size


def test_token_region_grows_to_whole_tokens_and_feathering_is_exactly_zero_away_from_it():
    region = np.zeros((64, 64), bool)
    region[30, 30] = True
    grown = token_region(region, patch=4, grow=0.04)  # 3 px, then whole 4×4 tokens
    assert grown[27:34, 27:34].all() and grown.sum() == 12 * 12  # tokens 6..8 in each axis
    assert torch.equal(
        grown.reshape(16, 4, 16, 4).amax((1, 3)).repeat_interleave(4, 0).repeat_interleave(4, 1), grown
    )
    paste = feathered(grown, feather=0.015)  # 1 px each side of the edge
    pool = torch.nn.functional.max_pool2d
    near = pool(grown[None, None], 3, 1, 1)[0, 0].bool()  # the region and 1 px around it
    interior = ~pool((1 - grown)[None, None], 3, 1, 1)[0, 0].bool()  # 1 px in from its edge
    edge = near & ~interior
    assert (paste[~near] == 0).all() and (paste[interior] == 1).all() and (paste[edge] > 0).all()
    assert (paste[edge] < 1).all()
    assert token_weights(grown, 4).shape == (1, 256, 1) and token_weights(grown, 4).sum() == 9


def test_blended_sampling_keeps_the_known_tokens_on_the_source_path_and_ends_on_the_source():
    z0, noise = torch.randn(1, 8, 3), torch.randn(1, 8, 3)
    weights = torch.tensor([1.0, 0, 1, 0, 0, 0, 0, 1]).view(1, 8, 1)
    seen = []

    def velocity(x, t):
        seen.append((x.clone(), t[0].item()))
        return torch.ones_like(x)

    grid = time_grid(6)
    out = blended_sample(velocity, z0, noise, grid, weights)
    known = weights[0, :, 0] == 0
    assert torch.equal(out[0, known], z0[0, known])  # exactly the source at t = 0
    for x, t in seen[1:]:  # every later step starts from the source's flow path in the known tokens
        torch.testing.assert_close(x[0, known], ((1 - t) * z0 + t * noise)[0, known])
    torch.testing.assert_close(out[0, ~known], noise[0, ~known] - 1.0)  # dx/dt = 1 from t = 1 to 0


def test_flow_edit_follows_the_velocity_difference_inside_the_region_only():
    """v_src(x) = a·x, v_tgt(x) = a·x + c: the update depends on d = z_e − z0 alone (fresh noise cancels),
    d ← m·(d + Δ·(a·d + c)); a z_target built otherwise, or a region not enforced, gives another result."""
    z0, c = torch.randn(1, 6, 2), torch.randn(1, 6, 2)
    weights = torch.tensor([1.0, 1, 0, 0, 1, 0]).view(1, 6, 1)
    grid = sub_grid(time_grid(8), 0.7)
    edited = flow_edit(lambda x, t: 0.5 * x + c, lambda x, t: 0.5 * x, z0, grid, weights,
                       torch.Generator().manual_seed(1))  # fmt: skip
    d = torch.zeros_like(z0)
    for t, t_next in zip(grid[:-1], grid[1:]):
        d = weights * (d + (t_next - t) * (0.5 * d + c))
    torch.testing.assert_close(edited, z0 + d)
    assert (edited[0, weights[0, :, 0] == 0] == z0[0, weights[0, :, 0] == 0]).all()


def test_flow_edit_with_the_same_condition_changes_nothing_and_inversion_undoes_sampling():
    z0 = torch.randn(2, 8, 3)
    same = lambda x, t: 0.5 * x + t.view(-1, 1, 1)  # noqa: E731
    grid = sub_grid(time_grid(10), 0.8)
    edited = flow_edit(same, same, z0, grid, torch.ones(1, 8, 1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(edited, z0)
    constant = lambda x, t: torch.full_like(x, 0.3)  # noqa: E731 - Euler is exact for a constant field
    inverted = invert(constant, z0, grid)
    torch.testing.assert_close(inverted, z0 + 0.8 * 0.3)
    from facemogle.flow import sample_ode

    torch.testing.assert_close(sample_ode(constant, inverted, grid), z0)


def test_mask_edit_at_the_shipped_configuration_keeps_the_source_exactly_outside_its_region(
    shipped, glasses_pair
):
    pair = glasses_pair
    result = shipped.edit(
        pair.source, mask=pair.target_labels, source_mask=pair.source_labels, num_inference_steps=4
    )
    assert result.operation == "mask" and result.method == "blend" and result.strength == 1.0
    edited, source = np.asarray(result.images[0]), np.asarray(pair.source)
    assert edited.shape == (SIDE, SIDE, 3)
    outside = result.region == 0
    assert outside.mean() > 0.7 and np.array_equal(edited[outside], source[outside])
    assert np.abs(edited.astype(int) - source)[result.region == 1].mean() > 5  # regenerated inside
    changed = pair.source_labels != pair.target_labels
    assert (result.region[changed] == 1).all()  # the whole change is regenerated
    np.testing.assert_array_equal(result.target_labels, pair.target_labels)


def test_attribute_edit_repaints_the_named_classes_only_and_states_the_change(shipped):
    pair = make_pair(0, "hair_color", size=SIDE)
    result = shipped.edit(pair.source, prompt=pair.instruction, operation="attribute", source_mask=pair.source_labels,
                          num_inference_steps=6)  # fmt: skip
    assert result.method == "flowedit" and result.strength == 0.85
    hair = feathered(token_region(pair.source_labels == HAIR, PATCH)).numpy() > 0  # hair, grown, feathered
    assert np.array_equal(result.region > 0, hair) and (result.region[pair.source_labels == HAIR] == 1).all()
    edited, source = np.asarray(result.images[0]), np.asarray(pair.source)
    assert np.array_equal(edited[result.region == 0], source[result.region == 0])
    assert (
        np.abs(edited.astype(int) - source)[pair.source_labels == HAIR].mean() > 10
    )  # the hair was repainted
    color = pair.value
    assert f"{color} hair" in result.prompt and f"{color} hair" not in result.source_prompt
    assert result.prompt.replace(color, "X") != result.prompt and result.source_prompt != result.prompt


def test_an_attribute_with_a_shape_is_drawn_into_the_mask_and_made_as_a_mask_edit(shipped):
    from facemogle.evaluators import load_evaluator
    from facemogle.shapes import add_hat

    pair = make_pair(0, "hat", size=SIDE)
    result = shipped.edit(pair.source, prompt=pair.instruction, source_mask=pair.source_labels, operation="attribute",
                          num_inference_steps=10)  # fmt: skip
    assert result.method == "blend" and result.strength == 1.0
    np.testing.assert_array_equal(result.target_labels, add_hat(pair.source_labels))
    changed = result.target_labels != pair.source_labels
    assert (result.region[changed] == 1).all() and (result.region == 0).mean() > 0.5
    assert "hat" in result.prompt and "hat" not in result.source_prompt
    edited, source = np.asarray(result.images[0]), np.asarray(pair.source)
    assert np.array_equal(edited[result.region == 0], source[result.region == 0])
    classifier = load_evaluator("classifier")
    reading = classifier.predict(load_image(result.images[0], classifier.config.resolution))[0]
    assert reading["hat"]  # the shipped classifier sees the hat
    # an explicit method keeps the drawn mask: FlowEdit's target branch is conditioned on it
    flowedit = shipped.edit(pair.source, prompt="add a hat", source_mask=pair.source_labels, operation="attribute",
                            method="flowedit", num_inference_steps=4)  # fmt: skip
    assert flowedit.method == "flowedit" and np.array_equal(flowedit.target_labels, result.target_labels)
    with pytest.raises(NoChangeError, match="already shows a hat"):
        shipped.edit(pair.source, prompt="add a hat", source_mask=result.target_labels, operation="attribute")
    unplaceable = pair.source_labels.copy()
    unplaceable[unplaceable == CLASSES.index("left eye")] = CLASSES.index("skin")
    with pytest.raises(EditError, match="both eyes"):
        shipped.edit(pair.source, prompt="add a hat", source_mask=unplaceable, operation="attribute")


def test_attribute_regions_with_and_without_drawn_shapes():
    from facemogle.edit import ATTRIBUTE_REGIONS, attribute_target, drawn_shapes
    from facemogle.shapes import add_eyeglasses

    labels = make_pair(0, "hair_length", size=SIDE).source_labels  # short hair
    ids = {c: CLASSES.index(c) for c in ("cloth", "neck", "background", "hair", "eyeglasses", "hat")}
    for prompt, region, covered in [("make the shirt red", None, "cloth"), ("add a necklace", None, "neck"),
                                    ("make it blond", "hair,background", "background")]:  # fmt: skip
        target, changed, shapes, repainted = attribute_target(labels, prompt, attribute_classes(prompt) if region is None
                                                              else (region.split(",")), region)  # fmt: skip
        assert not shapes and changed[labels == ids[covered]].all(), prompt
    # long hair: only the new hair and where it grows; the background elsewhere is kept
    target, changed, shapes, repainted = attribute_target(
        labels, "make the hair long", attribute_classes("make the hair long")
    )
    assert shapes == ("hair_length",) and repainted == () and changed.mean() < 0.5
    assert (changed == (target != labels)).all() and (target[changed] == ids["hair"]).all()
    # a shape and a colour: the drawn hat plus the hair repainted
    prompt, labels = (
        "add a hat and make the hair blond",
        make_pair(0, "hat", size=SIDE).source_labels,
    )  # no hat
    target, changed, shapes, repainted = attribute_target(labels, prompt, attribute_classes(prompt))
    assert shapes == ("hat",) and "hair" in repainted and changed[labels == ids["hair"]].all()
    assert (target == ids["hat"]).any() and changed[target == ids["hat"]].all()
    # already there: nothing to add; with another change, that change only
    with_glasses = add_eyeglasses(make_pair(0, "eyeglasses", size=SIDE).source_labels)
    with pytest.raises(NoChangeError, match="already shows eyeglasses"):
        attribute_target(with_glasses, "add eyeglasses", attribute_classes("add eyeglasses"))
    prompt = "add sunglasses and red lipstick"
    target, changed, shapes, repainted = attribute_target(with_glasses, prompt, attribute_classes(prompt))
    assert shapes == () and (target == with_glasses).all() and changed.any()
    # long hair already there (the classifier says so) and a colour: the hair repainted, not the background
    long_haired = make_pair(0, "hair_length", size=SIDE).target_labels
    prompt = "make the hair long and blond"
    target, changed, shapes, repainted = attribute_target(long_haired, prompt, attribute_classes(prompt),
                                                          present=("hair_length",))  # fmt: skip
    assert shapes == () and repainted == ("hair",) and not changed[long_haired == ids["background"]].any()
    # every keyword of a shape's classes draws it
    shape_keys = [
        keys for keys, region in ATTRIBUTE_REGIONS.items() if region[0] in ("eyeglasses", "hat", "mouth")
    ]
    for word in [w for keys in shape_keys for w in keys if w not in ("mouth", "teeth")] + ["bangs", "fringe"]:
        assert drawn_shapes(f"add {word}", attribute_classes(f"add {word}")), word
    assert drawn_shapes("make the hair longer", attribute_classes("make the hair longer")) == ("hair_length",)


def test_shortening_or_stopping_is_a_removal(shipped):
    long_haired = make_pair(0, "hair_length", size=SIDE)
    for prompt, match in [("make her stop smiling", "removals are mask edits"),
                          ("make the hair shorter", "removals are mask edits"),
                          ("make the hair short", "shortens the hair")]:  # fmt: skip
        with pytest.raises(EditError, match=match):
            shipped.edit(long_haired.target, prompt=prompt, operation="attribute",
                         source_mask=long_haired.target_labels, num_inference_steps=2)  # fmt: skip


def test_a_painted_on_attribute_is_pasted_through_its_own_pixels_not_the_grown_tokens(shipped):
    """Lipstick: the lips' own pixels feathered by 1 px (the mouth line and the skin beside the lips stay
    the source's), while the hair colour keeps the grown, token-rounded region; the seam metric's region
    follows the paste-back."""
    from facemogle.metrics.editing import edited_region

    pair = make_pair(1, "lipstick", size=SIDE)
    lips = np.isin(pair.source_labels, [CLASSES.index("upper lip"), CLASSES.index("lower lip")])
    result = shipped.edit(pair.source, prompt=pair.instruction, operation="attribute",
                          source_mask=pair.source_labels, num_inference_steps=4)  # fmt: skip
    assert result.method == "flowedit"
    pool = torch.nn.functional.max_pool2d
    near = pool(torch.from_numpy(lips).float()[None, None], 3, 1, 1)[0, 0].numpy() > 0  # lips + 1 px
    inside = ~(pool(torch.from_numpy(~lips).float()[None, None], 3, 1, 1)[0, 0].numpy() > 0)
    assert np.array_equal(result.region > 0, near) and (result.region[inside] == 1).all()
    grown = token_region(lips, PATCH).numpy() > 0
    assert (grown & ~near).sum() > lips.sum()  # the tokens would have pasted far more than the lips
    edited, source = np.asarray(result.images[0]), np.asarray(pair.source)
    assert np.array_equal(edited[~near], source[~near])
    assert np.abs(edited.astype(int) - source)[inside].mean() > 5  # the lips were repainted
    assert np.array_equal(edited_region(pair, "attribute edit", PATCH), lips)
    # only an attribute painted on alone: a shape change of the lips, a moustache there, or lipstick with
    # something else keeps the grown tokens
    assert painted_on("add red lipstick", LIPS, ()) and painted_on("put on lipstick", LIPS[:1], ())
    for prompt, classes, shapes in [("make the lips fuller", LIPS, ()), ("add a moustache", LIPS, ()),
                                    ("add lipstick and a smile", ("mouth", *LIPS), ("smiling",)),
                                    ("add lipstick", ("skin", *LIPS), ()), ("add lipstick and earrings", LIPS, ())]:  # fmt: skip
        assert not painted_on(prompt, classes, shapes), prompt
    hair_pair = make_pair(0, "hair_color", size=SIDE)
    hair = token_region(hair_pair.source_labels == HAIR, PATCH).numpy() > 0
    assert np.array_equal(edited_region(hair_pair, "attribute edit", PATCH), hair)


@pytest.mark.parametrize("method", ["inversion", "sdedit"])
def test_attribute_edit_alternatives_keep_the_outside(shipped, method):
    pair = make_pair(1, "lipstick", size=SIDE)
    result = shipped.edit(pair.source, prompt="add red lipstick", operation="attribute", method=method,
                          source_mask=pair.source_labels, num_inference_steps=4)  # fmt: skip
    assert result.method == method and set(result.settings["region_classes"]) == {"upper lip", "lower lip"}
    outside = result.region == 0
    edited, source = np.asarray(result.images[0]).astype(int), np.asarray(pair.source).astype(int)
    assert np.array_equal(edited[outside], source[outside])
    assert np.abs(edited - source)[result.region == 1].mean() > 2  # the lips were repainted


def test_inversion_keeps_the_known_tokens_on_the_inverted_latents_path(shipped, monkeypatch):
    """The known tokens follow the line from z0 through the inverted start (not fresh noise, which would
    put them off the path the edited tokens start on)."""
    import facemogle.edit as edit_module

    calls = []

    def spy(velocity, z0, noise, grid, weights, sampler="euler", x=None):
        calls.append((z0, noise, grid[0], x))
        return blend(velocity, z0, noise, grid, weights, sampler, x)

    blend = edit_module.blended_sample
    monkeypatch.setattr(edit_module, "blended_sample", spy)
    pair = make_pair(1, "lipstick", size=SIDE)
    shipped.edit(pair.source, prompt="add red lipstick", operation="attribute", method="inversion",
                 source_mask=pair.source_labels, num_inference_steps=4)  # fmt: skip
    ((z0, noise, start, x),) = calls
    assert x is not None and torch.allclose((1 - start) * z0 + start * noise, x, atol=1e-5)


def test_editing_runs_without_autograd_and_makes_several_images(shipped, glasses_pair):
    grad = []
    hook = shipped.model.transformer.register_forward_pre_hook(
        lambda m, a: grad.append(torch.is_grad_enabled())
    )
    try:
        result = shipped.edit(glasses_pair.source, mask=glasses_pair.target_labels, source_mask=glasses_pair.source_labels,
                              num_inference_steps=2, num_images=2)  # fmt: skip
    finally:
        hook.remove()
    assert grad and not any(grad)
    a, b = (np.asarray(image).astype(int) for image in result.images)
    outside = result.region == 0
    assert np.array_equal(a[outside], b[outside]) and np.abs(a - b)[result.region == 1].mean() > 2


def test_regenerate_keeps_more_of_the_source_at_lower_strength(shipped, glasses_pair):
    pair = glasses_pair
    distance = {}
    for strength in (0.3, 1.0):
        result = shipped.edit(pair.source, operation="regenerate", source_mask=pair.source_labels, strength=strength,
                              num_inference_steps=8)  # fmt: skip
        assert (result.region == 1).all() and result.strength == strength
        distance[strength] = np.abs(np.asarray(result.images[0]).astype(int) - np.asarray(pair.source)).mean()
    assert distance[0.3] < distance[1.0] / 2


def test_the_source_mask_is_parsed_when_not_given(shipped, glasses_pair):
    result = shipped.edit(glasses_pair.source, operation="regenerate", strength=0.2, num_inference_steps=2)
    agreement = (result.source_labels == glasses_pair.source_labels).mean()
    assert agreement > 0.85  # the shipped parser reads the face


def test_keyword_table_and_caption_changes():
    assert attribute_classes("make the hair blond") == ("hair",)
    assert attribute_classes("add red lipstick") == ("upper lip", "lower lip")  # red names the lips here
    assert set(attribute_classes("add eyeglasses")) == {
        "eyeglasses",
        "left eye",
        "right eye",
        "left brow",
        "right brow",
    }
    assert attribute_classes("make it prettier") == ()
    source = {"gender": "female", "hair_color": "black", "mouth": "closed", "smiling": False}
    assert changed_attributes(source, "add red lipstick") == {**source, "lipstick": True}  # red: the lips
    assert changed_attributes(source, "add a black beard")["hair_color"] == "black" == source["hair_color"]
    assert changed_attributes({**source, "hair_color": "brown"}, "add a black beard")["hair_color"] == "brown"
    assert changed_attributes(source, "make them red", ("upper lip", "lower lip"))["hair_color"] == "black"
    assert changed_attributes(source, "make the hair red")["hair_color"] == "red"
    assert "background" in attribute_classes("make the hair long") and "background" not in attribute_classes(
        "long earrings"
    )
    assert changed_attributes(source, "make her smile")["mouth"] == "smiling"
    assert changed_attributes(source, "make her pretty") == source
    assert changed_attributes(source, "blond hair")["hair_color"] == "blond"
    # an explicit region with the hair in it: colour words are the hair's unless another keyword is named
    assert (
        changed_attributes(source, "make it blond", ("hair", "left brow", "right brow"))["hair_color"]
        == "blond"
    )
    assert changed_attributes(source, "a blond beard", ("hair", "skin"))["hair_color"] == "black"


def test_a_shape_the_face_already_has_is_not_drawn_again(shipped):
    for edit_type, prompt, words in (
        ("bangs", "add bangs", "bangs"),
        ("hair_length", "make the hair long", "long hair"),
    ):
        pair = make_pair(0, edit_type)  # B has the attribute, and the classifier reads it so
        with pytest.raises(NoChangeError, match=f"already shows {words}"):
            shipped.edit(pair.target, prompt=prompt, operation="attribute", source_mask=pair.target_labels,
                         num_inference_steps=2)  # fmt: skip


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(prompt="make the hair blond"), "say which"),
        (dict(), "Nothing to edit"),
        (dict(operation="attribute", prompt="remove the eyeglasses"), "removals are mask edits"),
        (dict(operation="attribute", prompt="make him bald"), "removals are mask edits"),
        (dict(operation="attribute", prompt="shave the beard"), "removals are mask edits"),
        (dict(operation="attribute", prompt="add a hat", mask="SAME"), "draws its own target mask"),
        (dict(operation="regenerate", region="hair"), "chooses an attribute edit's classes"),
        (dict(mask="SAME2", region="hair"), "chooses an attribute edit's classes"),
        (dict(operation="attribute", prompt="make it prettier"), "names nothing the keyword table knows"),
        (dict(operation="attribute", prompt="blond", region="hairs"), "Unknown class 'hairs'"),
        (dict(operation="attribute", prompt="make it red", region="hat"), "has none of the classes hat"),
        (dict(operation="mask", method="flowedit", mask="SAME"), "does not apply to a mask edit"),
        (dict(operation="regenerate", strength=1.5), "strength is the start time"),
        (dict(operation="wiggle"), "Unknown edit operation"),
        (dict(mask="SAME"), "identical to the source's mask"),
        (dict(mask="WIDE"), "give a mask of the image's size"),
        (dict(operation="attribute", prompt="x" * 5000, region="hair"), "characters"),
        (dict(operation="mask"), "needs the new mask"),
        (dict(mask="SMALL"), "give a mask of the image's size"),
        (dict(operation="regenerate", num_inference_steps=0), "must be ≥ 1"),
        (
            dict(operation="attribute", prompt="She has blond hair.", source_prompt="She has blond hair."),
            "nothing",
        ),
    ],
)
def test_bad_edits_get_one_clear_error(shipped, glasses_pair, options, message):
    labels = glasses_pair.source_labels
    if options.get("mask") == "SAME":
        options["mask"] = labels.copy()
    elif options.get("mask") == "SAME2":
        options["mask"] = glasses_pair.target_labels
    elif options.get("mask") == "WIDE":
        options["mask"] = np.zeros((SIDE, 2 * SIDE), np.uint8)
    elif options.get("mask") == "SMALL":
        options["mask"] = labels[::2, ::2].copy()
    with pytest.raises(ValueError, match=message):
        shipped.edit(glasses_pair.source, source_mask=labels, **options)


def test_bad_images_get_one_clear_error(shipped, tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    for image, message in ((tmp_path / "missing.png", "not a readable face image"),
                           (tmp_path / "notes.png", "not a readable face image"),
                           (Image.new("RGB", (64, 48)), "crop it to a square")):  # fmt: skip
        with pytest.raises(EditError, match=message):
            shipped.edit(image, operation="regenerate")


def test_full_scale_edit_without_a_mask_or_parser_says_what_to_pass():
    class Flux:  # only what the check reads: a pipeline that is not the compact scale
        is_compact = False

    from facemogle.edit import _source_labels

    with pytest.raises(EditError, match="--source-mask"):
        _source_labels(Flux(), Image.new("RGB", (512, 512)), None, 512, None)


def test_edit_cli_writes_the_edit_and_never_its_inputs(tmp_path, capsys, glasses_pair):
    from facemogle.cli import main
    from facemogle.labels import load_mask, save_mask

    glasses_pair.source.save(tmp_path / "face.png")
    save_mask(glasses_pair.target_labels, tmp_path / "new.png")
    save_mask(glasses_pair.source_labels, tmp_path / "old.png")
    before = (tmp_path / "face.png").read_bytes()
    args = ["edit", "--image", str(tmp_path / "face.png"), "--mask", str(tmp_path / "new.png"),
            "--source-mask", str(tmp_path / "old.png"), "--steps", "2"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "edit.png"), "--grid", "--save-masks"]) == 0
    out = capsys.readouterr().out
    assert "mask edit, blend, strength 1" in out and (tmp_path / "edit_grid.png").is_file()
    np.testing.assert_array_equal(load_mask(tmp_path / "edit_target_mask.png"), glasses_pair.target_labels)
    assert Image.open(tmp_path / "edit.png").size == (SIDE, SIDE)
    assert main([*args, "--out", str(tmp_path / "edit.png")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "face.png"), "--overwrite"]) == 2
    assert "is an input" in capsys.readouterr().err and (tmp_path / "face.png").read_bytes() == before
    assert main(["edit", "--image", str(tmp_path / "face.png"), "--prompt", "take off the hat", "--op", "attribute",
                 "--out", str(tmp_path / "x.png")]) == 2  # fmt: skip
    assert "removals are mask edits" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_eval_task_edit_scores_every_method_and_reuses_its_images(tmp_path, capsys):
    import json

    from facemogle.cli import main

    args = ["eval", "--task", "edit", "--n-per-type", "1", "--steps", "2", "--out", str(tmp_path / "ev")]
    assert main(args) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    methods = report["methods"]
    assert set(methods) == {
        "nothing",
        "mask edit",
        "attribute edit",
        "sdedit (unblended)",
        "inversion (unblended)",
    }
    assert methods["nothing"]["all"]["n"] == 7 and methods["nothing"]["all"]["attribute_accuracy"] == 0.0
    assert methods["mask edit"]["all"]["n"] == 5  # hair colour and lipstick leave the mask as it is
    assert methods["mask edit"]["all"]["psnr_outside"] == "inf"  # the source pasted back exactly
    assert methods["attribute edit"]["all"]["n"] == 7  # pair 0 of each type is an addition or a change
    assert methods["sdedit (unblended)"]["all"]["psnr_outside"] < 40
    assert set(report["references"]) == {"mask → face", "text → face", "true edit B"}
    truth = report["references"]["true edit B"]["all"]
    assert (
        truth["n"] == 7 and truth["seam_vs_truth"] == pytest.approx(1.0) and truth["attribute_accuracy"] > 0.5
    )
    assert methods["nothing"]["all"]["seam_vs_truth"] != pytest.approx(1.0)  # A's bands are not B's
    assert (tmp_path / "ev" / "grid.png").is_file() and "| all | mask edit | 5 |" in (
        tmp_path / "ev" / "report.md"
    ).read_text()
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "ev").rglob("*.png") if p.name != "grid.png"}
    assert main(args) == 0  # a rerun scores the same images again
    assert {p: p.stat().st_mtime_ns for p in first} == first
    assert main([*args[:-4], "--steps", "3", "--out", str(tmp_path / "ev")]) == 2
    assert "other settings" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_task_edit_on_two_processes_gives_the_report_of_one(tmp_path):
    import json

    from conftest import one_thread, torchrun

    from facemogle.cli import main

    common = ["--task", "edit", "--n-per-type", "1", "--steps", "2"]
    with one_thread():
        assert main(["eval", *common, "--out", str(tmp_path / "one")]) == 0
    result = torchrun("-m", "facemogle.cli", "eval", *common, "--out", str(tmp_path / "two"), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    one, two = (json.loads((tmp_path / run / "report.json").read_text()) for run in ("one", "two"))
    a, b = one["methods"]["mask edit"]["all"], two["methods"]["mask edit"]["all"]
    assert a.pop("frechet") == pytest.approx(b.pop("frechet"), rel=1e-6)  # Fréchet: ~1e-9 noise
    assert a == b
    for path in (tmp_path / "one").rglob("*.png"):
        if path.name != "grid.png":
            other = tmp_path / "two" / path.relative_to(tmp_path / "one")
            assert np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(other))), path


def test_the_edit_reports_targets_give_each_edit_type_a_verdict_also_read_back_from_json():
    import json

    from facemogle.metrics.editing import edit_markdown, json_safe, target_rows

    def row(**values):
        base = {"n": 10, "psnr_outside": float("inf"), "psnr_outside_interval": (None, None)}
        for key, (value, low, high) in values.items():
            base |= {key: value, f"{key}_interval": (low, high)}
        return base

    glasses = {
        "mask edit": row(class_iou=(0.80, 0.77, 0.83), seam=(1.10, 1.0, 1.2)),
        "attribute edit": row(
            attribute_accuracy=(0.70, 0.60, 0.80), agreement=(0.93, 0.91, 0.94), seam=(1.3, 1.25, 1.4)
        ),
    }
    reference = row(class_iou=(0.84, 0.8, 0.9), attribute_accuracy=(0.80, 0.7, 0.9), agreement=(0.97, 0.9, 1.0),
                    seam=(1.0, 0.9, 1.1))  # fmt: skip
    report = {
        "model": "m", "pair_seed": 0, "n_per_type": 10, "steps": 2, "seed": 0, "types": ["eyeglasses", "lipstick"],
        "methods": {name: {"all": glasses[name], "eyeglasses": glasses[name], "lipstick": {"n": 0}}
                    for name in glasses},
        "references": {name: {"all": reference, "eyeglasses": reference, "lipstick": reference}
                       for name in ("mask → face", "text → face", "true edit B")},
    }  # fmt: skip
    report["references"]["text → face"]["lipstick"] = {"n": 0}  # a reference with nothing scored
    report["methods"]["attribute edit"]["lipstick"] = row(
        attribute_accuracy=(0.9, 0.8, 1.0), agreement=(0.95, 0.9, 1.0), seam=(1.0, 0.9, 1.1)
    )  # agreement exactly at its bound: met
    report["methods"]["mask edit"]["lipstick"] = row(
        class_iou=(0.21, 0.2, 0.22)
    )  # at 0.26 − 0.05 (float: 0.2100…02)
    report["references"]["mask → face"]["lipstick"] = row(class_iou=(0.26, 0.25, 0.27))
    report["types"].append("lips")  # the band on the lips' outline: B's own seam fails the bound
    report["methods"]["attribute edit"]["lips"] = row(attribute_accuracy=(0.9, 0.8, 1.0), agreement=(0.96, 0.9, 1.0),
                                                      seam=(4.8, 4.0, 5.9), seam_vs_truth=(0.94, 0.79, 1.13))  # fmt: skip
    report["methods"]["attribute edit"]["lips"]["seam_n"] = 6
    report["methods"]["mask edit"]["lips"] = {"n": 0}
    report["references"]["true edit B"]["lips"] = row(seam=(5.2, 4.4, 6.0), seam_vs_truth=(1.0, 1.0, 1.0))
    report["references"]["text → face"]["lips"] = row(attribute_accuracy=(0.99, 0.97, 1.0))
    report["references"]["mask → face"]["lips"] = {"n": 0}
    rows = target_rows(report)
    lips = {r["metric"]: (r["verdict"], r["target"], r["ceiling"]) for r in rows if r["type"] == "lips"}
    assert lips["seam"][:2] == ("missed", 1.2) and lips["seam_vs_truth"] == ("met", 1.2, 1.0)  # both shown
    assert lips["seam"][2] == pytest.approx(4.8 / 0.94)  # B's seam in the edit's own bands
    assert lips["agreement"][0] == "met" and "seam_vs_truth" not in {r["metric"] for r in rows if r["type"] != "lips"}
    verdicts = {
        (r["method"], r["metric"]): (r["verdict"], round(r["target"], 3))
        for r in rows
        if r["type"] == "eyeglasses"
    }
    assert verdicts == {
        ("mask edit", "class_iou"): ("met", 0.79),
        ("attribute edit", "attribute_accuracy"): ("within the interval", 0.75),
        ("attribute edit", "agreement"): ("missed", 0.95),
        ("mask edit", "seam"): ("met", 1.2),
        ("attribute edit", "seam"): ("missed", 1.2),
    }
    lipstick = {(r["method"], r["metric"]): r["verdict"] for r in rows if r["type"] == "lipstick"}
    assert lipstick == {("mask edit", "class_iou"): "met", ("attribute edit", "attribute_accuracy"): "no reference",
                        ("attribute edit", "agreement"): "met", ("attribute edit", "seam"): "met"}  # fmt: skip
    read_back = json.loads(json.dumps(json_safe(report)))
    assert [r["verdict"] for r in target_rows(read_back)] == [r["verdict"] for r in rows]
    markdown = edit_markdown(read_back)
    assert "| 4.800 [4.000, 5.900] (N 6) | 0.940 [0.790, 1.130] (N 6) |" in markdown  # thin lips: fewer seams
    assert "(N " not in markdown.split("| lips |")[0]  # every other row's seams cover all its pairs
    assert "| eyeglasses | mask edit | 10 | ∞ (identical) |" in markdown
    assert (
        "| eyeglasses | attribute edit | agreement | 0.930 [0.910, 0.940] | ≥ 0.950 | 0.970 | missed |"
        in markdown
    )
