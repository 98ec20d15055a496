"""Explanation methods and the metrics that judge them (pneumo.explain, pneumo.faithfulness), each metric
broken on purpose: a constant map, a map of the other class, a model-independent map, an inverted map."""
import json
import re

import numpy as np
import pytest

from conftest import run_script
from pneumo.checkpoint import load_checkpoint
from pneumo.data import load_split
from pneumo.explain import METHODS, deletion_auc, deletion_curves, gradcam_maps
from pneumo.faithfulness import border_share, paired_gap, peak_inside, plant_lesion, randomised_copy, rank_correlations, road_curves, verdict


@pytest.fixture(scope="module")
def setup(trained_checkpoint, synthetic_root):
    model, meta = load_checkpoint(trained_checkpoint)
    images, labels = load_split(synthetic_root, "test")
    return model, meta["normalization"], images[:48], labels[:48]


def maps_of(setup, images, targets, method="gradcam", model=None, layer="layer4"):
    model_, norm, _, _ = setup
    return gradcam_maps(model or model_, images, norm, "cpu", target_classes=targets, layer=layer, method=method)[0]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_one_map_a_film_in_0_1(setup, method):
    _, _, images, labels = setup
    maps = maps_of(setup, images[:3], labels[:3], method)
    assert maps.shape == (3, 28, 28) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6 and (maps.reshape(3, -1).max(axis=1) > 0).all()


def test_an_unknown_method_is_refused_in_one_line(setup):
    _, _, images, labels = setup
    with pytest.raises(ValueError, match=re.escape("unknown explanation method 'gradcam+'")):
        maps_of(setup, images[:1], labels[:1], "gradcam+")


def test_deletion_and_insertion_rank_the_map_above_the_other_class_and_a_constant_map(setup):
    """The decided class's map deletes the evidence fast and restores it fast; the same films with the map
    of the other class, or a constant map (pixels taken in reading order), do neither."""
    model, norm, images, labels = setup
    films, targets = images[labels == 1], np.ones(int((labels == 1).sum()), int)
    noise = np.random.default_rng(0).random(films.shape).astype(np.float32)

    def aucs(maps):
        return (deletion_auc(deletion_curves(model, films, maps, targets, norm, "cpu")),
                deletion_auc(deletion_curves(model, films, maps, targets, norm, "cpu", insert=True)))
    base_del, base_ins = aucs(noise)
    for maps, faithful in ((maps_of(setup, films, targets), True), (maps_of(setup, films, 0 * targets), False),
                           (np.ones_like(noise), False)):
        d, i = aucs(maps)
        deletion, insertion = paired_gap(d, base_del), paired_gap(i, base_ins)
        assert (deletion["ci95"][1] < 0 and insertion["ci95"][0] > 0) == faithful, (deletion, insertion)


def test_road_separates_most_from_least_relevant_first_and_an_inverted_map_reverses_it(setup):
    model, norm, images, labels = setup
    films, targets = images[labels == 1][:16], np.ones(16, int)
    maps = maps_of(setup, films, targets)
    for m, sign in ((maps, 1), (1 - maps, -1)):
        morf = road_curves(model, films, m, targets, norm, "cpu", True)
        lerf = road_curves(model, films, m, targets, norm, "cpu", False)
        assert morf.shape == lerf.shape == (16, 5)
        gap = paired_gap(lerf.mean(axis=1), morf.mean(axis=1))
        assert sign * gap["ci95"][0 if sign > 0 else 1] > 0, gap


def test_randomisation_check_passes_a_method_that_reads_the_weights_and_fails_maps_that_ignore_them(setup):
    """(Grad-CAM at stage 4 of a re-initialised network still follows the synthetic films' bright blob: its
    Spearman ρ with the trained model's maps is ~0.54 here; tests/test_gradcam.py checks it by Pearson.)"""
    model, _, images, labels = setup
    images, labels = images[:16], labels[:16]
    trained = maps_of(setup, images, labels, "integrated_gradients")
    randomised = maps_of(setup, images, labels, "integrated_gradients", model=randomised_copy(model))
    assert rank_correlations(trained, randomised).mean() < 0.5
    film_as_map = images.astype(np.float32) / 255  # the same "map" whatever the weights
    assert rank_correlations(film_as_map, film_as_map).mean() == pytest.approx(1.0)
    constant = np.ones_like(film_as_map)  # identical for both models: no evidence the model was read
    assert rank_correlations(constant, constant).mean() == 1.0


def test_the_planted_lesion_is_found_by_the_map_and_missed_by_a_constant_one(setup):
    _, _, images, labels = setup
    normal = images[labels == 0][:12]
    centres = [(0.3, 0.6), (0.7, 0.6)] * 6
    films, masks = plant_lesion(normal, centres)
    assert masks.sum(axis=(1, 2)).min() >= 8 and (masks[0, 16, 8] and not masks[1, 16, 8])
    assert peak_inside(maps_of(setup, films, np.ones(12, int), "gradcam", layer="layer3"), masks).mean() >= 0.9
    assert peak_inside(np.ones(films.shape), masks).mean() == 0  # the first pixel wins a tie: the corner
    swapped = masks[[1, 0] * 6]
    assert peak_inside(maps_of(setup, films, np.ones(12, int), "gradcam", layer="layer3"), swapped).mean() <= 0.1


def test_border_share_of_a_uniform_an_edge_and_a_central_map():
    uniform, edge, centre = np.ones((1, 28, 28)), np.zeros((1, 28, 28)), np.zeros((1, 28, 28))
    edge[0, -1, :] = 1
    centre[0, 10:18, 10:18] = 1
    assert border_share(uniform)[0] == pytest.approx(1 - (24 / 28) ** 2)
    assert border_share(edge)[0] == 1 and border_share(centre)[0] == 0
    assert np.isnan(border_share(np.zeros((1, 28, 28)))[0])


def test_verdict_fails_each_check_on_its_own():
    passing = {"deletion_gap_to_random": {"mean": -0.3, "ci95": [-0.35, -0.25]},
               "insertion_gap_to_random": {"mean": 0.3, "ci95": [0.25, 0.35]},
               "road_lerf_minus_morf": {"mean": 0.2, "ci95": [0.1, 0.3]},
               "randomisation_rho": {"mean": 0.1, "ci95": [0.0, 0.2]}, "lesion_hit_rate": 0.97}
    assert all(verdict(passing).values()) and len(verdict(passing)) == 5
    broken = {"deletion_gap_to_random": {"mean": -0.16, "ci95": [-0.2, -0.12]},
              "insertion_gap_to_random": {"mean": 0.1, "ci95": [0.05, 0.15]},
              "road_lerf_minus_morf": {"mean": 0.05, "ci95": [-0.01, 0.1]},
              "randomisation_rho": {"mean": 0.6, "ci95": [0.5, 0.7]}, "lesion_hit_rate": 0.9}
    for key, check in zip(broken, ("deletion_gap", "insertion_gap", "road_separated", "randomisation", "lesion")):
        assert verdict({**passing, key: broken[key]}) == {**verdict(passing), check: False}


@pytest.mark.slow
def test_benchmark_writes_the_comparison_chooses_on_val_and_resumes(trained_checkpoint, synthetic_root, tmp_path):
    args = ["--checkpoint", trained_checkpoint, "--data_root", synthetic_root, "--n", "16", "--device", "cpu",
            "--methods", "gradcam@layer4", "eigencam@layer4", "occlusion", "--out", tmp_path]
    first = run_script("benchmarks/explanations.py", *args)
    assert first.returncode == 0, first.stderr
    record = json.loads((tmp_path / "task1_explanations.json").read_text())
    chosen = record["chosen_on_val"]
    assert chosen in {"gradcam@layer4", "eigencam@layer4", "occlusion"} and set(record["splits"]) == {"val", "test"}
    # every method on val; on test only the one chosen and the one shipped before (test is read once)
    assert set(record["splits"]["val"]) == {"random", "gradcam@layer4", "eigencam@layer4", "occlusion"}
    assert set(record["splits"]["test"]) == {"random", chosen, "gradcam@layer4"}
    table = (tmp_path / "task1_explanations.md").read_text()
    assert table.count("| gradcam@layer4 |") == 2 and table.count("| eigencam@layer4 |") == 1 + (chosen == "eigencam@layer4")
    assert (tmp_path / "figures" / "task1_explanations.png").stat().st_size > 10_000
    again = run_script("benchmarks/explanations.py", *args)  # every (split, method) is kept: nothing recomputed
    assert again.returncode == 0 and not [line for line in again.stdout.splitlines() if line.startswith(("val ", "test "))]
    assert json.loads((tmp_path / "task1_explanations.json").read_text())["splits"] == record["splits"]
