"""The pretrain stage's section: optimisation, Ray Train scaling, checkpoints, the data mix."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from mvlp_core.spec.base import Strict, perf_only


class MixSpec(Strict):
    """UniGen's data recipe: each image record trains one task, text pairs are interleaved.

    A `multilingual_fraction` share of the image records that have non-English captions (UniGen:
    "10% of CC6L data", whatever their QA pairs) picks a random non-English caption and trains
    [trans] with that caption as the contrastive text; the rest are English: a record with QA
    pairs trains [qus] with weight `qus` against [cap] with weight `cap`. `text_pairs` is the
    share of examples drawn from the parallel text shards (WikiMatrix [trans]), when present.
    """

    cap: float = Field(1.0, ge=0)
    qus: float = Field(0.5, ge=0)
    multilingual_fraction: float = Field(0.1, ge=0, le=1)
    languages: list[str] | None = Field(
        None, description="CC6L languages to draw from; None = spec languages"
    )
    text_pairs: float = Field(0.2, ge=0, lt=1)
    min_pair_score: float | None = Field(None, description="drop text pairs scored below this")
    code_switch: float = Field(
        0.0,
        ge=0,
        le=1,
        description="M3P code-switching: share of English encoder texts ([qus] questions, the "
        "contrastive/[match] caption) in which words are swapped for their aligned translations",
    )
    code_switch_ratio: float = Field(0.5, ge=0, le=1, description="share of a text's words swapped")


class LoaderSpec(Strict):
    shuffle_buffer: int = Field(256, ge=1)
    num_workers: int | None = perf_only(
        None,
        ge=0,
        description="DataLoader processes per Ray Train worker; default: 4 on a GPU worker (at most "
        "its CPUs less the one training), none on a CPU-only one, whose training threads they would "
        "compete with. Each loader process tokenizes on its own thread (TOKENIZERS_PARALLELISM=false "
        "unless set)",
    )
    read_from: Literal["workdir", "published"] = perf_only(
        "workdir",
        description="where the loader reads the shards: the shard and text-shard folders in the "
        "workdir, or the object-store prefixes they were published to (publish.shards, and "
        "publish.text_shards where set), streamed shard by shard; the same bytes either way",
    )


class PretrainSpec(Strict):
    """Ray Train pretraining (UniGen's settings by default; all overridable)."""

    workers: int = perf_only(2, ge=1, le=4096, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = perf_only(False)
    gpus_per_worker: float = perf_only(1.0, gt=0)
    cpus_per_worker: float = perf_only(1.0, gt=0)
    grad_sync: Literal["auto", "ddp", "allreduce"] = perf_only(
        "auto",
        description="how workers average gradients: ddp (DistributedDataParallel, all-reduces "
        "overlapped with the backward pass), allreduce (one all-reduce of every gradient after it), "
        "auto (ddp on GPUs, allreduce on CPUs)",
    )
    batch_size: int = Field(32, gt=0, le=65536, description="per worker, per micro-step")
    grad_accum: int = Field(1, ge=1, le=4096)
    lr: float = Field(1e-4, gt=0, le=1)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(2000, ge=0, le=10**9)
    lr_schedule: Literal["linear", "cosine"] = Field(
        "linear",
        description="after the linear warm-up, the decay from lr to min_lr at max_steps: linear "
        "(UniGen, the weakly-supervised mVLP) or cosine (ERNIE-UniX²)",
    )
    min_lr: float = Field(
        0.0, ge=0, le=1, description="the learning rate the decay ends at (ERNIE-UniX²: 1e-6)"
    )
    max_steps: int = Field(
        10000, gt=0, le=10**9, description="optimizer steps; with `epochs` set, derived from the data instead"
    )
    epochs: float | None = Field(
        None,
        gt=0,
        le=10_000,
        description="passes over the image shards (UniGen: 30); sets max_steps to ceil(epochs x images / "
        "global batch), the global batch being workers x batch_size x grad_accum",
    )
    grad_clip: float | None = Field(1.0, gt=0)
    bf16: bool = Field(
        True, description="bf16 autocast on GPU, the frozen towers cast to bf16 once (ignored on CPU)"
    )
    compile: bool = perf_only(
        False,
        description="torch.compile each tower of the model (the family's `towers()`: UniGen's ViT, "
        "Q-Former, text encoder and decoder; the weakly-supervised model's ViT and encoder layers), "
        "each compiled on its first call: fused kernels and fewer launches on GPUs; the first steps "
        "wait for the compiler (about a minute even for the tiny towers on CPU)",
    )
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = perf_only(
        "default",
        description="torch.compile's mode with `compile`: reduce-overhead replays CUDA graphs (for "
        "steps bound by kernel launches; not with grad_accum > 1), max-autotune also searches kernel "
        "configurations",
    )
    checkpoint_every: int = perf_only(500, gt=0)
    keep_checkpoints: int = perf_only(2, ge=1)
    max_failures: int = perf_only(3, ge=0)
    log_every: int = perf_only(10, gt=0)
    storage_path: str = perf_only(
        "{workdir}/pretrain/ray", description="Ray Train storage: path or fsspec URL"
    )
    run_name: str = perf_only("pretrain", pattern=r"^[a-zA-Z0-9_.-]+$")
    seed: int = 0
    mix: MixSpec = MixSpec()
    loader: LoaderSpec = LoaderSpec()
    fail_at_step: int | None = perf_only(
        None, description="test knob: rank 1 exits hard once at this step (fault injection)"
    )

    @model_validator(mode="after")
    def _decay_ends_below_the_peak(self) -> PretrainSpec:
        if self.min_lr > self.lr:
            raise ValueError(
                f"pretrain.min_lr {self.min_lr:g} is above pretrain.lr {self.lr:g}; give min_lr <= lr"
            )
        return self

    @model_validator(mode="after")
    def _one_rank_a_gpu(self) -> PretrainSpec:
        """Ray packs workers of a fraction of a GPU onto one device, and NCCL, the GPU workers'
        process group, refuses two ranks on one GPU ("Duplicate GPU detected") when the run starts."""
        if self.use_gpu and self.workers > 1 and self.gpus_per_worker < 1:
            raise ValueError(
                f"pretrain.gpus_per_worker={self.gpus_per_worker:g} with {self.workers} GPU workers: Ray "
                "would put several ranks on one GPU, which NCCL refuses; give each worker a whole GPU "
                "(gpus_per_worker >= 1) or train with workers=1"
            )
        return self

    @model_validator(mode="after")
    def _cuda_graphs_without_accumulation(self) -> PretrainSpec:
        """CUDA graph trees hand a micro-step's gradients out of their own memory pool, which the
        next replay overwrites: accumulated gradients come out wrong without an error
        (pytorch/pytorch#96693, #169545, open in torch 2.13)."""
        if self.compile and self.compile_mode == "reduce-overhead" and self.grad_accum > 1:
            raise ValueError(
                f"pretrain.compile_mode=reduce-overhead with grad_accum={self.grad_accum}: CUDA graphs "
                "lose accumulated gradients (pytorch/pytorch#169545); set compile_mode=default or "
                "max-autotune, or grad_accum=1 with a larger batch_size"
            )
        return self

    def loader_processes(self, on_gpu: bool) -> int:
        """DataLoader processes per worker: `loader.num_workers`, else the default it describes."""
        if self.loader.num_workers is not None:
            return self.loader.num_workers
        return max(0, min(4, int(self.cpus_per_worker) - 1)) if on_gpu else 0
