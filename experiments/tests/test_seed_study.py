import pytest

from conftest import error_line, run_cli
from experiments import seed_study


def test_seed_study_states_the_recipe_and_refuses_repeated_seeds(trained_checkpoint, synthetic_root, tmp_path):
    result = seed_study.main(seed_study.parse_args(["--checkpoints", str(trained_checkpoint), "--data_root",
                                                    str(synthetic_root), "--out", str(tmp_path), "--device", "cpu"]))
    run = result["runs"][0]
    assert run["recipe"]["aug_border"] == "reflect" and run["recipe"]["batch_size"] == 16 and "seed" not in run["recipe"]
    assert result["summary"]["at_0.5"]["auc"]["mean"] == pytest.approx(run["at_0.5"]["auc"])
    text = (tmp_path / "task1_seeds.md").read_text()
    assert text.startswith("# Task 1: test metrics over 1 seed\n") and "`--aug_border reflect`" in text
    repeated = run_cli(seed_study, "--checkpoints", trained_checkpoint, trained_checkpoint,
                       "--data_root", synthetic_root, "--out", tmp_path / "again")
    assert repeated.returncode == 1 and "share seeds" in error_line(repeated)
    assert not (tmp_path / "again" / "task1_seeds.json").exists()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    blocked = run_cli(seed_study, "--checkpoints", trained_checkpoint, "--data_root", synthetic_root, "--out", a_file)
    assert blocked.returncode == 1 and "not a folder" in error_line(blocked) and a_file.read_text() == "keep me"
