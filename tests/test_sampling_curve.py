import numpy as np
import pytest
from conftest import benchmark


def load():
    return benchmark("sampling_curve")


def test_costs_count_every_guidance_branch_of_every_evaluation():
    curve = load()
    euler, model = curve.Setting("euler", 10), curve.CostInputs()
    assert [euler.rows(mode, model) for mode in ("mask", "text", "both")] == [20, 20, 30]
    heun = curve.Setting("heun", 10)  # 19 evaluations: no corrector on the last step
    assert heun.rows("both", model) == 57
    early = curve.Setting("euler", 10, (0.0, 0.8), (0.0, 0.8))  # no guidance while t > 0.8
    grid = curve.time_grid(10, curve.time_shift(256))[:-1]
    high = int((grid > 0.8).sum())
    assert 0 < high < 10 and early.rows("both", model) == 30 - 2 * high
    assert early.name == "euler10_t0-0.8_m0-0.8" and curve.REFERENCE.name == "euler50"


def test_the_choice_is_the_cheapest_setting_not_worse_than_the_reference():
    curve = load()
    settings = [curve.Setting("euler", 50), curve.Setting("euler", 4), curve.Setting("euler", 8)]

    def rows(name, delta, high):
        out = []
        for mode in ("mask", "text", "both"):
            row = {"eval": name, "mode": mode, "frechet": 10.0, "miou": 0.7, "accuracy": 0.8}
            if name != "ref":
                for metric in ("miou", "accuracy"):
                    row[f"{metric}_difference"], row[f"{metric}_difference_interval"] = (
                        delta,
                        [delta - 0.01, high],
                    )
            out.append(row)
        return out

    table, points, choice = curve.summarise(
        settings, rows("ref", 0, 0) + rows("e4", -0.1, -0.05) + rows("e8", -0.01, 0.01), curve.CostInputs()
    )
    assert choice == "euler8" and "| euler4 |" in table and table.count("| no |") == 1
    image = np.asarray(curve.plot(points, choice))
    ringed = np.asarray(curve.plot(points))
    black = (image.sum(-1) == 0) & (ringed.sum(-1) > 0)  # the ring round the chosen setting's points
    assert image.shape == (520, 900, 3) and black.sum() > 20
    assert ((image == [0, 0, 255]).all(-1).any()) and ((image == [255, 0, 0]).all(-1).any())
    # realism counts: a Fréchet worse than the reference beyond its interval rules a setting out
    blurry = rows("e8", -0.01, 0.01)
    blurry[0].update(frechet_difference=5.0, frechet_difference_interval=[2.0, 8.0])
    _, _, choice = curve.summarise(
        settings, rows("ref", 0, 0) + rows("e4", -0.1, -0.05) + blurry, curve.CostInputs()
    )
    assert choice == "euler50"


def test_the_cost_weighs_rows_without_the_mask_by_their_shorter_sequence():
    curve = load()
    euler, model = curve.Setting("euler", 10), curve.CostInputs()
    # with the mask: the guided row full, the unguided one without condition tokens
    assert euler.cost("mask", model) == pytest.approx(10 + 10 * (48 + 256) / (48 + 512))
    # no mask: no condition tokens
    assert euler.cost("text", model) == pytest.approx(20 * (48 + 256) / (48 + 512))
    assert euler.cost("both", model) == pytest.approx(20 + 10 * (48 + 256) / (48 + 512))


def test_the_cost_follows_the_models_own_tokens_and_guidance(tmp_path):
    """Read from the model folder: a model without mask guidance (scale 1) runs no unguided-mask branch."""
    from facemogle.pipeline import FaceMoGLEPipeline

    pipe = FaceMoGLEPipeline.init("tiny", resolution=64, patch_size=8)
    pipe.config.sampling.mask_guidance = 1.0
    pipe.save_pretrained(tmp_path / "m")
    curve = load()
    model = curve.CostInputs.read(tmp_path / "m")
    assert (model.tokens, model.mask_guidance) == (64, 1.0)
    euler = curve.Setting("euler", 10)
    assert [euler.rows(mode, model) for mode in ("mask", "text", "both")] == [10, 20, 20]
    shipped = curve.CostInputs.read(None)
    assert shipped.tokens == 256 and shipped.text_tokens == 48
    (tmp_path / "flux").mkdir()
    (tmp_path / "flux" / "config.json").write_text('{"format": "facemogle-flux"}')
    with pytest.raises(SystemExit, match="full-scale model"):
        curve.CostInputs.read(tmp_path / "flux")


def fake_evaluation(folder, stems, modes=("mask", "text", "both"), scores=None):
    """A finished eval folder as `facemogle eval` writes it: report, per-item counts, images per mode."""
    import json

    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    report = {"images": None, "modes": {m: scores or {} for m in modes}}
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "report.md").write_text("# Evaluation")
    np.savez_compressed(folder / "per_item.npz", stems=np.array(stems))
    for mode in modes:
        (folder / mode).mkdir()
        (folder / mode / "generation.json").write_text('{"model": "m"}')
        for stem in stems:
            Image.new("RGB", (8, 8)).save(folder / mode / f"{stem}.png")


def test_a_kept_evaluation_is_restored_only_for_what_it_was_made_for(tmp_path):
    from facemogle.metrics.archive import ArchiveError, archive_evaluation, restore_evaluation

    stems = [str(27000 + k) for k in range(10)]
    fake_evaluation(tmp_path / "runs" / "euler4", stems)
    made_for = {"model": "abc", "n": 10}
    archive_evaluation(tmp_path / "runs" / "euler4", tmp_path / "kept", made_for)
    assert not (tmp_path / "kept.partial").exists()
    kept = sorted(p.name for p in (tmp_path / "kept" / "both").iterdir())
    assert kept == sorted([f"{stem}.png" for stem in stems[:8]] + ["generation.json"])  # eval refuses others
    assert not restore_evaluation(tmp_path / "nothing", tmp_path / "new", made_for)
    assert restore_evaluation(tmp_path / "kept", tmp_path / "new", made_for)
    assert (tmp_path / "new" / "per_item.npz").is_file() and len(
        list((tmp_path / "new" / "mask").iterdir())
    ) == 9
    assert restore_evaluation(tmp_path / "kept", tmp_path / "new", made_for)  # restoring twice is harmless
    with pytest.raises(ArchiveError, match="n 10 \\(asked: 200\\)"):
        restore_evaluation(tmp_path / "kept", tmp_path / "new2", {"model": "abc", "n": 200})
    fake_evaluation(tmp_path / "other", stems, scores={"n": 10})
    with pytest.raises(ArchiveError, match="holds another evaluation"):
        restore_evaluation(tmp_path / "kept", tmp_path / "other", made_for)
    archive_evaluation(tmp_path / "runs" / "euler4", tmp_path / "numbers", made_for, images=0)
    assert [p.name for p in (tmp_path / "numbers" / "mask").iterdir()] == ["generation.json"]
    (tmp_path / "numbers" / "made_for.json").unlink()  # a kept folder cut short: not a kept evaluation
    assert not restore_evaluation(tmp_path / "numbers", tmp_path / "new3", made_for)
