
import pytest
import torch

from pneumo.atomic import save_torch_atomic
from pneumo.checkpoint import load_checkpoint, make_checkpoint
from pneumo.model import build_model
from pneumo.runtime import UserError


def write_checkpoint(path, threshold=0.42):
    torch.manual_seed(0)
    model = build_model()
    ckpt = make_checkpoint(model, image_size=28, normalization={"mean": 0.5, "std": 0.5},
                           threshold=threshold, val_metrics={"auc": 0.9}, train_args={"lr": 0.002},
                           data_sha256="ab" * 32, epoch=3)
    save_torch_atomic(ckpt, path)
    return model.eval()


def test_round_trip_rebuilds_the_same_model_with_its_metadata(tmp_path):
    original = write_checkpoint(tmp_path / "m.pth")
    model, meta = load_checkpoint(tmp_path / "m.pth")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(model(x), original(x))
    assert meta["threshold"] == 0.42 and meta["class_names"] == ["normal", "pneumonia"]
    assert meta["train_args"] == {"lr": 0.002} and len(meta["sha256"]) == 64
    assert "state_dict" not in meta and not model.training
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pth"]  # no temp file left behind


class RunsCode:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {MARKER}",))


MARKER = None


def test_pickled_code_is_refused_and_never_executed(tmp_path):
    global MARKER
    MARKER = tmp_path / "executed"
    payload = {"arch": "resnet18_small_input", "state_dict": {}, "evil": RunsCode()}
    torch.save(payload, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="refused"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not MARKER.exists()


def test_truncated_file_gives_one_clear_error(tmp_path):
    write_checkpoint(tmp_path / "m.pth")
    blob = (tmp_path / "m.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(UserError, match="task1/train.py"):
        load_checkpoint(tmp_path / "absent.pth")


def test_other_architecture_is_refused(tmp_path):
    write_checkpoint(tmp_path / "m.pth")
    payload = torch.load(tmp_path / "m.pth", weights_only=True)
    payload["arch"] = "vit_b_16"
    torch.save(payload, tmp_path / "vit.pth")
    with pytest.raises(UserError, match="architecture 'vit_b_16'"):
        load_checkpoint(tmp_path / "vit.pth")


def test_weights_of_another_shape_are_refused(tmp_path):
    write_checkpoint(tmp_path / "m.pth")
    payload = torch.load(tmp_path / "m.pth", weights_only=True)
    payload["state_dict"]["fc.weight"] = torch.zeros(3, 512)
    torch.save(payload, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="do not fit"):
        load_checkpoint(tmp_path / "bad.pth")


def test_a_checkpoint_of_another_format_version_is_refused(tmp_path):
    write_checkpoint(tmp_path / "m.pth")
    payload = torch.load(tmp_path / "m.pth", weights_only=True)
    payload["format_version"] = 2
    torch.save(payload, tmp_path / "v2.pth")
    with pytest.raises(UserError, match="checkpoint format 2; this code reads format 1"):
        load_checkpoint(tmp_path / "v2.pth")
