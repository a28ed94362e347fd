"""The iglue-eval stage's section: tasks, settings, languages, fine-tuning."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from mvlp_core.spec.augment import FinetuneAugmentSpec
from mvlp_core.spec.base import Strict, perf_only

IGLUE_TASKS = ("xvnli", "xgqa", "marvl", "xflickrco", "wit")


class IglueFinetuneTaskSpec(Strict):
    """One task's departures from the shared fine-tune settings (unset: the shared value)."""

    epochs: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, gt=0)
    grad_accum: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, gt=0)
    max_train_items: int | None = Field(None, gt=0)
    head_lr_scale: float | None = Field(None, gt=0)
    freeze: list[str] | None = None


class IglueFinetuneSpec(Strict):
    """The fine-tune each (task, setting) starts with (mvlp_core/eval/finetune.py); `tasks`
    overrides fields per task, since tasks that fine-tune different parts (the contrastive space for
    retrieval, label words for the classifiers) want different rates."""

    epochs: int = Field(3, ge=0, description="0: evaluate the pretrained model as is")
    batch_size: int = Field(16, gt=0, description="examples per optimiser step")
    grad_accum: int = Field(
        1,
        ge=1,
        description="micro-batches a step's batch is split into, their gradients added (memory: "
        "IGLUE's scripts pass --gradient_accumulation_steps 4); in-batch negatives (retrieval) are "
        "then the micro-batch's",
    )
    lr: float = Field(5e-5, gt=0, description="zero-shot (English) fine-tuning")
    max_steps: int | None = Field(None, gt=0)
    max_train_items: int | None = Field(None, gt=0, description="cap on English training items")
    head_lr_scale: float = Field(
        1.0,
        gt=0,
        description="learning-rate factor for the parts only fine-tuning trains (UniGen's "
        "multi-image gate and image positions, used by MaRVL alone): they start fresh while the body "
        "is pretrained",
    )
    freeze: list[str] = Field(
        [],
        description="parameter name prefixes held fixed during fine-tuning, e.g. "
        "[text_encoder.embeddings], so that English-only fine-tuning cannot move the English "
        "tokens' embeddings away from the other languages'",
    )
    warmup: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of the fine-tune's steps the lr warms up over, then linear decay to 0 "
        "(IGLUE's scripts: --warmup_proportion 0.1); 0: decay from the start, as UniGen and the "
        "weakly-supervised paper fine-tune",
    )
    weight_decay: float = Field(
        1e-4,
        ge=0,
        description="AdamW's, on every weight but biases and norms (IGLUE's scripts: --weight_decay 0.0001)",
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's (IGLUE's scripts: 0.9 0.999)")
    eps: float = Field(1e-6, gt=0, description="AdamW's (IGLUE's scripts: --adam_epsilon 1e-6)")
    itm_negatives: Literal["hard", "random"] = Field(
        "hard",
        description="retrieval fine-tuning with a discriminative head (the weakly-supervised model): "
        "each positive's ITM negatives from the batch, drawn ∝ softmax of the contrastive "
        "similarity (ALBEF, the paper's released fine-tune), or uniformly (random)",
    )
    augment: FinetuneAugmentSpec | None = Field(
        None,
        description="training images augmented as the weakly-supervised paper fine-tunes (App. "
        "B.2.2: RandAugment; its released code crops 50-100% of the area, flips, RandAugment(2, 7)); "
        "dev and test images never are. null: resized only, as IGLUE's scripts",
    )
    select_start: bool = Field(
        False,
        description="the starting weights compete with the trained epochs on dev, so a fine-tune "
        "that only hurts dev keeps them; false: the best trained epoch, as IGLUE (VOLTA) selects",
    )
    tasks: dict[Literal["xvnli", "xgqa", "marvl", "xflickrco", "wit"], IglueFinetuneTaskSpec] = Field(
        {}, description="task -> fields that differ from the shared ones, e.g. {wit: {lr: 3e-4}}"
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas {list(betas)}: each must be in [0, 1), e.g. [0.9, 0.999]")
        return betas


class IglueSpec(Strict):
    """IGLUE evaluation (stage iglue-eval): tasks x settings x languages over a root laid out like
    IGLUE's datasets/ folder, with one image root per folder kind."""

    root: str | None = Field(
        None, description="annotation root laid out like IGLUE's datasets/ folder (required to evaluate)"
    )
    image_roots: dict[Literal["flickr30k", "coco", "gqa", "marvl", "nlvr2", "wit"], str] = Field(
        {},
        description="folder kind -> image folder; default: <root>/images/<kind>. wit may name the "
        "output folder of a download stage that fetched WIT's URL list (mvlp_core/eval/wit_urls.py)",
    )
    tasks: list[Literal["xvnli", "xgqa", "marvl", "xflickrco", "wit"]] = list(IGLUE_TASKS)
    settings: list[Literal["zero-shot", "few-shot", "translate-test"]] = ["zero-shot"]
    languages: dict[str, list[str]] = Field(
        {}, description="task -> test languages besides English; default: IGLUE's"
    )
    dev_when_no_test: bool = Field(
        False,
        description="where the root lacks IGLUE's xGQA (few_shot/<lang>/test.json) or NLVR2 "
        "(nlvr2/annotations/test.jsonl) test file, as a trimmed copy does, score that unit on its "
        "dev file, labelled split dev in every output; not comparable with IGLUE's test scores, and "
        "optimistic: a dev file also selects the fine-tune (English's, xGQA few-shot's own). false: "
        "the missing file is an error",
    )
    few_shot: dict[str, str] = Field(
        {"xvnli": "48", "xgqa": "48", "marvl": "10x2", "xflickrco": "100"},
        description="task -> shots of the train_<shots> file used in the few-shot setting",
    )
    lr_grid: list[float] = Field([1e-4, 5e-5, 1e-5], min_length=1, description="few-shot learning rates")
    few_shot_epochs: int = Field(20, ge=1, description="IGLUE's few-shot scripts: --num_epoch 20")
    few_shot_batch: Literal["iglue", "finetune"] = Field(
        "iglue",
        description="the few-shot fine-tune's batch: IGLUE's scripts' for the task and shots (xvnli "
        "and xgqa 48: 64, marvl 10x2: 32, xflickrco 100: 32 in two micro-batches; mvlp_core/eval/"
        "tasks.py FEW_SHOT_BATCH), the task's fine-tune batch for shots they do not run; finetune: "
        "always the task's fine-tune batch",
    )
    finetune: IglueFinetuneSpec = IglueFinetuneSpec()
    rerank_k: int = Field(16, ge=0, description="retrieval: top-k re-ranked with the [match] score")
    image_size: int | None = Field(
        None,
        gt=0,
        le=4096,
        description="fine-tune and test images at this size, the image encoder's position "
        "embeddings interpolated (the weakly-supervised paper fine-tunes at 384, App. B.2.2); None: "
        "the size the model was pretrained at. A family whose image encoder reads one size "
        "(UniGen's) refuses another",
    )
    max_text_len: dict[
        Literal["xvnli", "xgqa", "marvl", "xflickrco", "wit"], Annotated[int, Field(ge=4, le=512)]
    ] = Field(
        {},
        description="task -> the text's token limit (special tokens included) when fine-tuning and "
        "testing it (the weakly-supervised paper: 40 for XVNLI, xGQA and MaRVL, 50 for xFlickr&CO "
        "and WIT, Tables 7-8); unset: the model's pretraining limit (UniGen's max_text_len, the "
        "weakly-supervised model's max_len.image_text)",
    )
    bf16: bool = Field(
        False,
        description="fine-tune and test under bf16 autocast (weights, gradients and AdamW's state "
        "stay fp32), for the activation memory and the tensor-core speed of bf16 on a GPU. Scores "
        "can move a little. IGLUE's scripts fine-tune in fp32 (false); UniGen's paper in mixed precision",
    )
    answer_normalisation: Literal["vqa", "lower", "none"] = "vqa"
    max_test_items: int | None = Field(None, gt=0, description="cap per test file (smoke runs)")
    max_missing_test_images: float = perf_only(
        0.0,
        ge=0,
        le=1,
        description="share of a test unit's items whose image is missing or undecodable that it "
        "may score without (IGLUE scores every item, so any such score is not comparable; the "
        "unit's rejects name them); above it the unit fails naming the count",
    )
    max_dev_items: int | None = Field(
        None,
        gt=0,
        description="cap on the dev items that select a fine-tune (English, or xGQA few-shot's own)",
    )
    max_new_tokens: int = Field(8, gt=0, description="xGQA answer length")
    seed: int = 0
    batch_size: int = perf_only(16, gt=0)
    workers: int = perf_only(
        1,
        ge=1,
        le=1024,
        description="units evaluated in parallel as Ray tasks (execution.engines.iglue-eval: ray) on "
        "a local Ray, whose CPUs it sets; on a cluster every unit is submitted and the cluster's "
        "free CPUs and GPUs decide how many run at once",
    )
    device: str = perf_only(
        "cpu",
        description="torch device of each unit; on the ray engine write cuda (Ray gives each task "
        "its own GPU, which it sees as cuda:0)",
    )
    gpus_per_unit: float = perf_only(
        1.0,
        gt=0,
        le=64,
        description="GPUs each Ray task asks for when device is a GPU (cuda...): Ray hides the GPUs "
        "from a task that asks for none; 0.5 puts two units on one GPU",
    )
    loader_workers: int | None = perf_only(
        None,
        ge=0,
        le=64,
        description="processes per unit that decode (and augment) fine-tuning images a few "
        "micro-batches ahead of the step; default: 4 a GPU when device is a GPU (4 x gpus_per_unit, "
        "at least 1, so that units sharing a GPU share its CPUs too), none on CPU, where they would "
        "compete with the unit's one training thread. A fine-tuning Ray unit asks for these CPUs "
        "besides its own; each keeps its own image cache (image_cache_mb)",
    )
    image_cache_mb: int = perf_only(
        1024,
        gt=0,
        le=1_000_000,
        description="decoded image tensors a unit keeps (MiB, least recently used out first): memory "
        "is bounded by this and one batch, not by the size of a training or test set",
    )

    def loader_processes(self) -> int:
        """Fine-tuning's image-decoding processes per unit: `loader_workers`, else the default it
        describes."""
        if self.loader_workers is not None:
            return self.loader_workers
        return max(1, round(4 * self.gpus_per_unit)) if self.device.startswith("cuda") else 0
