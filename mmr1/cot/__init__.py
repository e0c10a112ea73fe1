"""Long chain-of-thought data: teacher prompting and rejection sampling."""

from mmr1.cot.rejection import RejectionResult, keep_verified

__all__ = ["RejectionResult", "keep_verified"]
