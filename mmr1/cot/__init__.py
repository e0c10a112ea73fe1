"""Long chain-of-thought data: teacher prompting and rejection sampling."""

from mmr1.cot.generate import generate_cot, judge_cots, to_sft_records

__all__ = ["generate_cot", "judge_cots", "to_sft_records"]
