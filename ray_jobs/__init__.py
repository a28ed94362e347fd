"""Distributed entrypoints (`python -m ray_jobs.NAME --spec ...`): Ray Data maps for translate and
qa, Ray Train trainers for pretrain and IGLUE. None has landed yet; the stages run in-process
through mvlp_core (issues: translation at scale, pretraining, IGLUE evaluation)."""
