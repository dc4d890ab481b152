"""Data: experiments (x_i, t_i, y_i), the treatment space, and the simulated promotions experiment."""
from coarse_gpu.data.accounting import Accounting, AccountingError
from coarse_gpu.data.experiment import ExperimentData
from coarse_gpu.data.simulator import PROMOTION_SPACE, PromotionsSimulator, PromotionsTruth, model_matrix
from coarse_gpu.data.treatments import TreatmentSpace, product_grid

__all__ = [
    "Accounting", "AccountingError", "ExperimentData", "PROMOTION_SPACE", "PromotionsSimulator", "PromotionsTruth", "TreatmentSpace",
    "model_matrix", "product_grid",
]
