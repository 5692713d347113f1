"""Knowledge-graph completion: models (registry), CAT-KG, filtered tie-aware evaluation, training.

`geofm.kg.models.build_model` registers the built-in models on first use
(CAT-KG lives in `geofm.kg.cat`, imported lazily because it shares kernels
with `geofm.nn.cat`, which itself imports `geofm.kg.scoring`).
"""

from geofm.kg.evaluate import EvalResult, FilterIndex, RankingEvaluator
from geofm.kg.models import MODELS, KGModel, build_model, register_model

__all__ = ["MODELS", "KGModel", "build_model", "register_model", "RankingEvaluator", "FilterIndex", "EvalResult"]
