"""Mitigations of déjà vu memorization (SPEC section 8) and their registry."""

from mitigations.base import Mitigation, MitigationError, TrainingPlan
from mitigations.registry import apply_mitigations, available, describe, parse_mitigation, parse_mitigations

__all__ = ["Mitigation", "MitigationError", "TrainingPlan", "apply_mitigations",
           "available", "describe", "parse_mitigation", "parse_mitigations"]
