"""predict_batches: the one no-grad prediction loop (fine-tuned predictions, embed, fill-mask)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from selfsup.predict import eval_mode, predict_batches


class Doubler(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.drop = nn.Dropout(0.5)

    def predict(self, batch: dict) -> dict:
        assert not self.training and torch.is_inference_mode_enabled()
        return {"y": self.drop(batch["x"]) * self.w}


@pytest.mark.parametrize("workers", [1, 3])
def test_outputs_in_order_without_grad_in_eval_mode(workers):
    model = Doubler().train()
    batches = ((k, {"x": torch.full((2,), float(k))}) for k in range(10))
    out = list(predict_batches(model, batches, workers=workers))
    assert [k for k, _ in out] == list(range(10))
    assert all(torch.equal(res["y"], torch.full((2,), 2.0 * k)) for k, res in out)  # no dropout
    assert not any(res["y"].requires_grad for _, res in out)
    assert model.training  # its mode is back


def test_eval_mode_restores_on_error():
    model = Doubler().train()
    with pytest.raises(RuntimeError), eval_mode(model):
        assert not model.training
        raise RuntimeError
    assert model.training
    with eval_mode(model.eval()):
        pass
    assert not model.training


def test_tensor_batches_and_a_forward():
    model = Doubler()
    ((key, y),) = predict_batches(model, [("a", torch.ones(3))], lambda x: x * model.w)
    assert key == "a" and y.tolist() == [2.0, 2.0, 2.0]
