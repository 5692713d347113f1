"""Knowledge-graph completion: models (registry), CAT-KG, filtered tie-aware evaluation, training.

Importing this package registers every model (`geofm.kg.models.MODELS`).
"""

from geofm.kg import cat as _cat  # noqa: F401  (registers "cat")
from geofm.kg.evaluate import EvalResult, FilterIndex, RankingEvaluator
from geofm.kg.models import MODELS, KGModel, build_model, register_model

__all__ = ["MODELS", "KGModel", "build_model", "register_model", "RankingEvaluator", "FilterIndex", "EvalResult"]
