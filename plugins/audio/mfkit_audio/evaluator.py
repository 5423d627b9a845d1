"""The ``digit_classifier`` evaluator: how recognisable and how varied generated spectrograms are.

A :class:`~mfkit_audio.classifier.SpectrogramClassifier` is trained locally on the real training
spectrograms (cached by a hash of the data and settings; nothing is downloaded). For samples with their
class conditions it gives:

* ``accuracy``: the share of samples the classifier assigns to the class they were conditioned on
  (samples with the null label left out);
* ``frechet``: the Fréchet distance between Gaussians fitted to the classifier's 128-wide embeddings of
  the samples and of the real held-out items;
* ``inception``: exp(mean KL(p(y|x) || p(y))), from 1 to the number of classes.

With ``through_vocoder``, samples are first turned into sound and analysed again (vocoder, then log-mel),
so the figures judge what a listener hears. :meth:`DigitClassifierEvaluator.baselines` gives two
reference rows: real against real, and real items resynthesised through the vocoder against real.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from mfkit.metrics import frechet_distance, train_feature_network
from mfkit.plugins import Evaluator, EvaluatorSpec, Modality, PluginContext
from mfkit_audio.classifier import SpectrogramClassifier, classification_loss, inception_score
from mfkit_audio.features import LogMel


class DigitClassifierParams(BaseModel):
    """Parameters of the digit-classifier evaluator."""

    model_config = ConfigDict(extra="forbid")
    steps: int = Field(600, gt=0, description="classifier training steps")
    batch_size: int = Field(64, gt=0, description="classifier batch size")
    lr: float = Field(2e-3, gt=0, description="classifier learning rate (Adam)")
    width: int = Field(32, gt=0, description="classifier channels in its first stage")
    through_vocoder: bool = Field(False, description="score samples after vocoding and re-analysis (what is heard)")


class DigitClassifierEvaluator(Evaluator):
    metrics = {"accuracy": "higher", "frechet": "lower", "inception": "higher"}

    def __init__(self, params: DigitClassifierParams, modality: Modality, context: PluginContext | None = None) -> None:
        if modality.condition() is None:
            raise ValueError("digit_classifier needs class labels: use a speech folder with label_from set, or the "
                             "spoken-digit corpus")
        self.params, self.modality = params, modality
        self.context = context or modality.context or PluginContext(purpose="eval")
        self.classes = len(modality.condition().names)
        self.network: SpectrogramClassifier | None = None

    def fit(self, train) -> None:
        p = self.params
        found = train_feature_network(
            lambda: SpectrogramClassifier(self.classes, p.width), train, classification_loss, name="speech-digits",
            steps=p.steps, batch_size=p.batch_size, lr=p.lr, seed=self.context.seed, cache_dir=self.context.cache_dir,
            settings={"classes": self.classes, "shape": list(self.modality.sample_shape)})
        self.network = found.module

    def _network(self) -> SpectrogramClassifier:
        if self.network is None:
            self.fit(self.modality.dataset("train"))
        return self.network

    def resynthesise(self, x: torch.Tensor) -> torch.Tensor:
        """Model tensors -> sound (the modality's vocoder) -> model tensors again."""
        waves = self.modality.waveforms(x)
        return self.modality.normalise(LogMel(self.modality.settings)(waves))

    def score(self, samples: torch.Tensor, cond: Any, real: torch.Tensor, real_cond: Any) -> dict[str, float]:
        network = self._network()
        x = samples.detach().float().cpu()
        if not bool(torch.isfinite(x).all()):
            return {"accuracy": 0.0, "frechet": float("inf"), "inception": 1.0}
        if self.params.through_vocoder:
            x = self.resynthesise(x)
        logits, embedding = network.outputs(x)
        _, real_embedding = network.outputs(real.detach().float().cpu())
        return {"accuracy": self._accuracy(logits, cond), "frechet": frechet_distance(embedding, real_embedding),
                "inception": inception_score(torch.softmax(logits.double(), 1))}

    def _accuracy(self, logits: torch.Tensor, cond: Any) -> float:
        """Share of samples classified as their class; samples with the null label (unconditional, e.g.
        `mfkit eval --cond null`) are left out, NaN when none asks for a class."""
        if cond is None:
            return float("nan")
        labels = torch.as_tensor(cond).long().cpu()
        asked = labels < self.classes
        if not bool(asked.any()):
            return float("nan")
        return float((logits.argmax(1)[asked] == labels[asked]).double().mean())

    def baselines(self, real: torch.Tensor, real_cond: torch.Tensor) -> dict[str, dict[str, float]]:
        """Reference rows on real held-out items split in halves: the first half scored against the second
        as it is ("real") and after a trip through the vocoder ("vocoded real")."""
        half = real.shape[0] // 2
        first, second = real[:half], real[half:2 * half]
        cond, second_cond = real_cond[:half], real_cond[half:2 * half]
        through = self.params.through_vocoder
        self.params = self.params.model_copy(update={"through_vocoder": False})
        try:
            plain = self.score(first, cond, second, second_cond)
            vocoded = self.score(self.resynthesise(first), cond, second, second_cond)
        finally:
            self.params = self.params.model_copy(update={"through_vocoder": through})
        return {"real": plain, "vocoded real": vocoded}


def build(params: DigitClassifierParams, modality: Modality, context: PluginContext) -> DigitClassifierEvaluator:
    return DigitClassifierEvaluator(params, modality, context)


SPEC = EvaluatorSpec(
    name="digit_classifier",
    description="Speech: class accuracy, Fréchet distance and inception-style score from a spectrogram classifier "
                "trained locally on the real data",
    factory=build,
    params_model=DigitClassifierParams,
    modalities=("speech",),
)
