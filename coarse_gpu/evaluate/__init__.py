"""Evaluation of policies: true (oracle) profits on simulated data and doubly robust values on real data."""
from coarse_gpu.evaluate.dr import DRResult, arm_weights, dr_scores, dr_value
from coarse_gpu.evaluate.oracle import (
    oracle_control_value,
    oracle_customer_profit,
    oracle_full_personalization,
    oracle_value,
    share_of_full,
)

__all__ = [
    "DRResult", "arm_weights", "dr_scores", "dr_value", "oracle_control_value", "oracle_customer_profit",
    "oracle_full_personalization", "oracle_value", "share_of_full",
]
