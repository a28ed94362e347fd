"""Pretraining in mvlp_core: the data loader, the training loop, checkpoints, metrics and curves.

No Ray here: ray_jobs/pretrain.py runs `loop.train` on each Ray Train worker."""
