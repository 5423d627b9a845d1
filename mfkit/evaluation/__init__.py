"""Scoring generated samples against held-out real data (what `mfkit eval` runs).

- :class:`Evaluation`: real data loaded, evaluator fitted, real-vs-real floor scored; ``run(model, steps=...,
  euler=...)`` samples per step count and scores each row, timing network and decoding apart;
- :func:`evaluate_checkpoint`: the same from a checkpoint (recipe, modality state, weights, evaluator);
- :class:`TrainingEvaluation`, :class:`BestTracker`: evaluation during training and the best checkpoint;
- :func:`check_evaluator`: the contract an evaluator plugin must meet (for plugin tests).
"""
from mfkit.evaluation.contract import check_evaluator, check_evaluator_spec
from mfkit.evaluation.data import RealData, load_split
from mfkit.evaluation.loading import evaluate_checkpoint, find_evaluator
from mfkit.evaluation.report import EvalReport, Row
from mfkit.evaluation.runner import Evaluation, draw, parse_counts, score
from mfkit.evaluation.training import BestTracker, TrainingEvaluation, evaluate_during_training

__all__ = [
    "BestTracker", "EvalReport", "Evaluation", "RealData", "Row", "TrainingEvaluation", "check_evaluator",
    "check_evaluator_spec", "draw", "evaluate_checkpoint", "evaluate_during_training", "find_evaluator",
    "load_split", "parse_counts", "score",
]
