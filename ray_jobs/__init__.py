"""Distributed entrypoints (`python -m ray_jobs.NAME --spec ...`): Ray Data maps for translate and
qa, Ray Train trainers for pretrain and IGLUE. Landed: `qa` (vLLM engines through ray.data.llm);
the other stages run in-process through mvlp_core until theirs land."""
