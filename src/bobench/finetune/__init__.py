"""End-to-end fine-tuning (backbone + linear head): the library call behind the `finetune` protocol,
`bob finetune` and the Kubernetes fine-tune Job.

    from bobench.finetune import finetune
    metrics = finetune("toy", "toy", "runs/ft", {"epochs": 3}, seed=0)
"""

from bobench.finetune.config import FinetuneConfig, load_config_file
from bobench.finetune.job import read_status, run_job
from bobench.finetune.loop import Classifier, finetune

__all__ = ["Classifier", "FinetuneConfig", "finetune", "load_config_file", "read_status", "run_job"]
