
import pytest
import torch

from pneumo.atomic import save_torch_atomic
from pneumo.checkpoint import load_checkpoint, make_checkpoint
from pneumo.model import build_model
from pneumo.runtime import UserError


def write_checkpoint(path, threshold=0.42, calibration=None):
    torch.manual_seed(0)
    model = build_model()
    ckpt = make_checkpoint(model, image_size=28, normalization={"mean": 0.5, "std": 0.5},
                           threshold=threshold, calibration=calibration or {"method": "platt", "slope": 0.8, "intercept": 1.5},
                           val_metrics={"auc": 0.9}, train_args={"lr": 0.002}, data_sha256="ab" * 32, epoch=3)
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
    payload["format_version"] = 3
    torch.save(payload, tmp_path / "v3.pth")
    with pytest.raises(UserError, match="checkpoint format 3; this code reads formats 1, 2"):
        load_checkpoint(tmp_path / "v3.pth")


def test_calibration_is_stored_and_applied_and_format_1_still_loads(tmp_path):
    """Format 2 carries Platt scaling, which the Classifier applies to every probability; a format-1 checkpoint
    (written before issue 32) loads with the network's own P; a broken calibration is refused in one line."""
    import numpy as np
    from scipy.special import expit

    from pneumo.classifier import Classifier
    from pneumo.inference import predict_logits
    write_checkpoint(tmp_path / "m.pth")
    clf = Classifier.load(tmp_path / "m.pth")
    images = np.random.default_rng(0).integers(0, 255, (4, 28, 28), dtype=np.uint8)
    z = predict_logits(clf.model, images, clf.normalization)
    np.testing.assert_allclose(clf.predict_proba(images), expit(0.8 * z + 1.5), rtol=1e-6)
    old = torch.load(tmp_path / "m.pth", weights_only=True)
    old["format_version"] = 1
    del old["calibration"]
    save_torch_atomic(old, tmp_path / "old.pth")
    before = Classifier.load(tmp_path / "old.pth")
    assert before.calibration["method"] == "none"
    np.testing.assert_allclose(before.predict_proba(images), expit(z), rtol=1e-6)
    for bad in ({"method": "platt", "slope": -1.0, "intercept": 0.0}, {"method": "isotonic", "slope": 1.0, "intercept": 0.0}):
        broken = dict(old, format_version=2, calibration=bad)
        save_torch_atomic(broken, tmp_path / "bad.pth")
        with pytest.raises(UserError, match="calibration"):
            load_checkpoint(tmp_path / "bad.pth")
    del broken["calibration"]
    save_torch_atomic(broken, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="calibration"):
        load_checkpoint(tmp_path / "bad.pth")
