"""Progressive delivery: rollouts moved step by step and judged by statistics."""
