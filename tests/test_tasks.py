"""Transfer tasks: head size, loss and torchmetrics metric per kind of label."""

import pytest
import torch
import torchmetrics

from dabs_rq.tasks import BinaryCorrelationTask, BinaryTask, MulticlassTask, MultilabelTask, RegressionTask


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


@pytest.mark.parametrize(
    "task_class,metric,function",
    [
        (RegressionTask, "spearman", torchmetrics.functional.spearman_corrcoef),
        (BinaryCorrelationTask, "pearson", torchmetrics.functional.pearson_corrcoef),
    ],
)
def test_correlation_batch_mean_is_dabs_batch_size_weighted_mean_of_per_batch_values(task_class, metric, function):
    """DABS logs a per-batch correlation with on_epoch=True: Lightning averages it weighted by batch size,
    the last partial batch included. ``split`` is one correlation over everything."""
    torch.manual_seed(0)
    preds, labels = torch.randn(300), torch.randn(300)
    labels = (labels > 0).float() if task_class is BinaryCorrelationTask else labels
    batches = [(preds[i : i + 128], labels[i : i + 128]) for i in range(0, 300, 128)]  # 128, 128, 44
    expected = sum(len(p) * float(function(p, y)) for p, y in batches) / 300
    task = task_class(metric, correlation="batch_mean")
    per_batch = task.metric()
    for p, y in batches:
        per_batch.update(*task.metric_inputs(p.view(-1, 1), y))
    assert float(per_batch.compute()) == pytest.approx(expected, rel=1e-5)
    whole = task_class(metric, correlation="split")
    split_metric = whole.metric()
    for p, y in batches:
        split_metric.update(*whole.metric_inputs(p.view(-1, 1), y))
    assert float(split_metric.compute()) == pytest.approx(float(function(preds, labels)), rel=1e-5)
    assert float(split_metric.compute()) != pytest.approx(expected, rel=1e-3)
    assert task.describe()["correlation"] == "batch_mean"


def test_correlation_batch_mean_skips_single_sample_batches_and_rejects_unknown_aggregates():
    task = RegressionTask("pearson")
    metric = task.metric()
    metric.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 4.0]))
    value = float(metric.compute())
    metric.update(torch.tensor([5.0]), torch.tensor([0.0]))  # no correlation in one sample: left out, not NaN
    assert float(metric.compute()) == pytest.approx(value)
    with pytest.raises(ValueError, match="correlation must be one of batch_mean, split"):
        RegressionTask("pearson", correlation="epoch")
