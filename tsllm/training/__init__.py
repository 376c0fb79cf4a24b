"""Training: value/ORM data building (`data`, pure Python), the value trainer (`value_trainer`,
Accelerate + optional DeepSpeed) and the policy trainer.

Nothing is imported here on purpose: `tsllm.training.data` must stay importable without torch, so
import what you need from the submodules.
"""
