"""Task environments: one MDP over text per task, plus explicit toy trees. Pure Python."""
