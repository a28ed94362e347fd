"""Ray engines of the stages that offer one, and the job entrypoint that runs any stage:
`python -m ray_jobs STAGE --spec ...` (by hand, through the Ray Jobs API, or as a RayJob).

Each engine module holds what its stage's plan receives on the `ray` engine (named by the stage
descriptor, `Engine("ray", "ray_jobs.MODULE:ATTRIBUTE")`): `translate.ray_executor` (a Ray Data
actor pool), `qa.questioner` (vLLM engines through ray.data.llm), `pretrain.train_with_ray` (a Ray
Train TorchTrainer), `iglue_eval.run_units_with_ray` (units as Ray tasks). `engines.run_stage` runs
a stage on the engine its spec picks; `connect` starts or joins Ray for all of them."""
