"""Transfer tasks: head size, loss and torchmetrics metric per kind of label."""

import pytest
import torch

from dabs_rq.tasks import BinaryTask, MulticlassTask, MultilabelTask, RegressionTask


def evaluate(task, logits, labels):
    metric = task.metric()
    metric.update(*task.metric_inputs(logits, labels))
    return float(metric.compute()) * task.scale


def test_multiclass_accuracy_and_loss():
    task = MulticlassTask(3)
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    labels = torch.tensor([0, 1, 2, 1])
    assert evaluate(task, logits, labels) == pytest.approx(75.0)
    assert task.loss(logits, labels) > 0


def test_binary_uses_one_logit_and_probability_threshold():
    task = BinaryTask()
    assert task.num_outputs == 1
    logits = torch.tensor([[2.0], [-2.0], [0.3], [-0.3]])
    labels = torch.tensor([1, 0, 0, 0])
    assert evaluate(task, logits, labels) == pytest.approx(75.0)
    assert torch.isfinite(task.loss(logits, labels))


def test_multilabel_mean_auroc():
    task = MultilabelTask(2)
    logits = torch.tensor([[3.0, -1], [-3.0, 1], [2.0, 2], [-2.0, -2]])
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])
    assert evaluate(task, logits, labels) == pytest.approx(100.0)


@pytest.mark.parametrize("metric", ["pearson", "spearman"])
def test_regression_correlations(metric):
    task = RegressionTask(metric)
    preds = torch.tensor([[0.1], [0.4], [0.35], [0.8]])
    labels = torch.tensor([0.0, 1.0, 2.0, 3.0])
    value = evaluate(task, preds, labels)
    assert 50 < value <= 100
    assert task.metric_name == metric


def test_bad_task_settings():
    with pytest.raises(ValueError, match="num_classes"):
        MulticlassTask(1)
    with pytest.raises(ValueError, match="pearson, spearman"):
        RegressionTask("mcc")
