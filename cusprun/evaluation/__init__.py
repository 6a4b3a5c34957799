"""Evaluation and the comparison report: held-out loss/perplexity per eval set, multiple-choice
accuracy, size and speed, retention relative to dense. Metric definitions: docs/evaluation.md."""
from cusprun.evaluation.compare import compare
from cusprun.evaluation.config import METRIC_FAMILIES, EvalConfig, EvaluationError, ModelEntry
from cusprun.evaluation.evaluate import (MetricValue, ModelResult, evaluate_loaded, evaluate_model,
                                         load_for_eval, prepare_inputs)
from cusprun.evaluation.items import (LossExample, MCItem, as_loss_examples, as_mc_items,
                                      build_definition_items, build_topic_items,
                                      build_translation_items, first_sentence,
                                      loss_examples_from_table)
from cusprun.evaluation.intervals import Difference, paired_difference, samples_of, wilson
from cusprun.evaluation.likelihood import (LossResult, MCResult, encode, encode_item, heldout_loss,
                                           mc_accuracy, score_sequences, scored_tokens)
from cusprun.evaluation.metrics import METRICS, retention
from cusprun.evaluation.plots import overlap_matrix, plot_overlap, plot_retention
from cusprun.evaluation.report import ComparisonReport, ReportRow, build_report
from cusprun.evaluation.report_files import write_report
from cusprun.evaluation.size import checkpoint_bytes, size_metrics
from cusprun.evaluation.speed import speed_metrics
from cusprun.evaluation.tasks import build_answer_items, loss_sets_from_tables, mc_tasks_from_tables

__all__ = [
    "METRICS", "METRIC_FAMILIES", "ComparisonReport", "Difference", "encode_item",
    "paired_difference", "samples_of", "wilson", "EvalConfig", "EvaluationError", "LossExample",
    "LossResult", "MCItem", "MCResult", "MetricValue", "ModelEntry", "ModelResult", "ReportRow",
    "as_loss_examples", "as_mc_items", "build_answer_items", "build_definition_items", "build_report",
    "build_topic_items", "build_translation_items", "checkpoint_bytes", "compare", "encode",
    "evaluate_loaded", "evaluate_model", "first_sentence", "heldout_loss", "load_for_eval",
    "loss_examples_from_table", "loss_sets_from_tables", "mc_accuracy", "mc_tasks_from_tables", "overlap_matrix", "plot_overlap", "plot_retention",
    "retention", "score_sequences", "scored_tokens", "size_metrics", "speed_metrics", "write_report",
]
