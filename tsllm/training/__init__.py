"""Training: value/ORM data building (`data`, pure Python), the value trainer (`value_trainer`,
transformers.Trainer with an MSE loss) and the policy trainer (`policy_trainer`, TRL), which share
one config vocabulary (`args`).

Nothing is imported here on purpose: `tsllm.training.data` must stay importable without torch, so
import what you need from the submodules.
"""
