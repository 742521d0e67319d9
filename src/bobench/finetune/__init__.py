"""End-to-end fine-tuning (backbone + linear head): the library call behind the `finetune` protocol,
`bob finetune` and the Kubernetes fine-tune Job.

    from bobench.finetune.loop import finetune
    metrics = finetune("toy", "toy", "runs/ft", {"epochs": 3}, seed=0)

The package imports nothing itself: `bobench.finetune.config` (the recipe and its checks) stays
torch-free, so the scheduler checks a fine-tune config at plan time without torch; `loop` and `job`
import torch.
"""
