"""Issue 32's plan as experiments/shift_study.py applies it: a recipe replaces e15 only with a gain beyond the spread
and no loss of clean val AUC beyond it; each recipe keeps its own best rule."""
from experiments import shift_study
from pneumo.calibration import RULES


def seeds(scores, auc=0.997, best="even_odds_shifted"):
    return [{"clean_auc": auc + 0.0001 * i, "corrupted_auc": 0.99,
             "rules": {r: {"score": s if r == best else s - 0.01} for r in RULES}} for i, s in enumerate(scores)]


def test_a_recipe_wins_only_beyond_the_spread_and_without_losing_clean_auc():
    base = seeds([0.950, 0.952, 0.954], best="youden_shifted")
    assert shift_study.choose({"e15": base, "new": seeds([0.952, 0.953, 0.955])})["recipe"] == "e15"  # inside the sd
    won = shift_study.choose({"e15": base, "new": seeds([0.970, 0.971, 0.972])})
    assert won["recipe"] == "new" and won["rule"] == "even_odds_shifted"
    assert won["per_recipe"]["e15"]["rule"] == "youden_shifted"
    assert shift_study.choose({"e15": base, "new": seeds([0.970, 0.971, 0.972], auc=0.990)})["recipe"] == "e15"


def test_recipes_are_grouped_by_their_seed_suffix():
    class Keys:
        files = ["labels", "e15_seed0/z", "e15_seed1/z", "e15_medmnistc_seed0/z", "e15_medmnistc_seed0/corrupted_z"]
    assert shift_study.recipes_of(Keys()) == {"e15": ["e15_seed0", "e15_seed1"], "e15_medmnistc": ["e15_medmnistc_seed0"]}
