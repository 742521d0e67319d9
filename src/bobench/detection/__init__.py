"""Object detection and instance segmentation: COCO metrics, detectors on any registered backbone,
training with resumable checkpoints (`bobench.protocols.detection` and friends use them)."""
