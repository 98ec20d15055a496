import torch

from pneumo.model import EMBEDDING_DIM, build_model


def test_logits_embedding_and_stage_geometry():
    model = build_model().eval()
    x = torch.randn(3, 1, 28, 28)
    shapes = {}
    hooks = [layer.register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
             for name, layer in model.stage_outputs().items()]
    with torch.no_grad():
        logits, emb = model(x), model.embed(x)
    for h in hooks:
        h.remove()
    assert logits.shape == (3, 2) and emb.shape == (3, EMBEDDING_DIM)
    assert torch.allclose(model.fc(emb), logits, atol=1e-5)
    assert shapes["layer4"][-2:] == (4, 4) and shapes["layer3"][-2:] == (7, 7)


def test_larger_inputs_still_give_512_features():
    with torch.no_grad():
        assert build_model().eval().embed(torch.randn(1, 1, 64, 64)).shape == (1, EMBEDDING_DIM)
