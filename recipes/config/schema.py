"""The recipe format: pydantic models, ``extra="forbid"`` everywhere.

Training keys follow LLaMA-Factory's names (lora_rank, lora_alpha, cutoff_len, learning_rate, ...).
Every training key may appear in ``[defaults]`` (shared by all stages) or in a stage; a key left out
everywhere takes the seed plan's value for the stage's kind (``SEED_PLAN`` under the defaults of the
stage kind's plugin, ``StageKind.defaults``).
This module imports neither torch nor transformers: ``recipes validate`` depends on it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from recipes.config.data_source import DataSource  # noqa: F401 (re-exported)
from recipes.config.strict import Strict
# the recipe's run-wide tables, re-exported: code and plugins name them from here
from recipes.config.tables import FSDP2_RESHARD_AFTER_FORWARD, Benchmark, Distributed  # noqa: F401

Precision = Literal["auto", "bf16", "fp16", "fp32"]
# precision names -> torch dtype names (the one table; ``recipes.training.precision.torch_dtype``)
TORCH_DTYPE_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
Scheduler = Literal[
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
]

MODEL_REF = "model"  # the name a stage's `base` uses for the recipe's [model]


def _nonblank_sample(value: str) -> str:
    if not value.strip():
        raise ValueError("a sample is empty; give the beginning of a text to continue or a question to answer")
    return value


SamplePrompt = Annotated[str, AfterValidator(_nonblank_sample)]


class ModelSource(Strict):
    """Where the starting model comes from."""

    path: str = Field(description="A local folder, a hub id (needs the files in the local HF cache), "
                      "or `bundled:tiny-qwen2` (the embedded tiny Qwen2 model, built on first use).")
    revision: Optional[str] = Field(None, description="Hub revision (branch, tag or commit).")
    trust_remote_code: bool = Field(False, description="Allow the model's own code (Qwen-7B v1 needs it).")


class Quantization(BaseModel):
    """Which backend loads the model weights, plus that backend's own options.

    The options are checked against the model the backend plugin supplies (see hookspecs)."""

    model_config = ConfigDict(extra="allow")
    backend: str = "none"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Settings(Strict):
    """LoRA and training settings. All optional here: unset keys fall back to [defaults], then to
    the seed plan's value for the stage's kind. Strict types: ``max_steps = "4"`` or
    ``gradient_checkpointing = "no"`` are refused, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # LoRA
    lora_rank: Optional[int] = Field(None, gt=0, le=1024)
    lora_alpha: Optional[float] = Field(None, gt=0)
    lora_dropout: Optional[float] = Field(None, ge=0, lt=1)
    lora_target: Optional[Union[str, list[str]]] = Field(
        None, description='"all" (every linear layer but the output head), or module names.')
    use_rslora: Optional[bool] = Field(None, description="Rank-stabilised LoRA: scale by lora_alpha / sqrt(lora_rank) "
                                       "instead of lora_alpha / lora_rank (peft's use_rslora).")
    use_dora: Optional[bool] = Field(None, description="Weight-decomposed LoRA (DoRA, peft's use_dora): a trained "
                                     "magnitude per output row besides A and B; slower, more memory (the plan counts it).")
    init_lora_weights: Optional[str] = Field(
        None, description='How A and B start (peft\'s init_lora_weights): "default" (B zero), "gaussian", "pissa", '
        '"pissa_niter_N" (fast SVD, N iterations), "olora". PiSSA and OLoRA change the base weights; the published '
        "adapter is converted to a plain LoRA on the original base.")
    loraplus_lr_ratio: Optional[float] = Field(
        None, gt=0, description="LoRA+: the B matrices learn at learning_rate x this ratio (peft's "
        "create_loraplus_optimizer; the paper suggests 16).")
    embedding_learning_rate: Optional[float] = Field(
        None, gt=0, lt=1, description="The learning rate of the trained token rows (train_tokens) and of LoRA on "
        "embedding layers; default: learning_rate.")
    neftune_noise_alpha: Optional[float] = Field(
        None, gt=0, description="SFT: NEFTune noise on the input embeddings while training (transformers' "
        "neftune_noise_alpha; the paper uses 5). Ignored by pre-training stages when set in [defaults].")
    # how a stage starts from an earlier stage
    chaining: Optional[Literal["merge", "continue", "stack"]] = Field(
        None, description="merge: the earlier adapter merged into the base (16/32-bit, never 4-bit), a new "
        "adapter on top; continue: keep training the earlier adapter; stack: a new adapter on top of the "
        "frozen earlier one.")
    loss: Optional[str] = Field(None, description="How the training loss is computed: \"chunked\" (default: "
                                "the output layer and cross-entropy in chunks, only where a label is), "
                                "\"standard\" (full logits), or a loss plugin's name.")
    loss_options: Optional[dict[str, Any]] = Field(
        None, description="The loss function's own options, e.g. {chunk_size = 256} for chunked "
        "(`recipes plugins` lists each loss; `recipes schema` their options).")
    train_tokens: Optional[Union[Literal["auto", False], list[str]]] = Field(
        None, description='The rows of these tokens train in the input embedding and the output layer (a base '
        'model has not learned ChatML\'s <|im_start|> and <|im_end|>): a list of token strings, false, or "auto" '
        "(default: on for an SFT stage whose starting model does not know the chat tokens; see "
        "recipes/training/token_rows.py for the rule).")
    # data
    cutoff_len: Optional[int] = Field(None, gt=0, description="Maximum tokens per training sequence.")
    overlong_examples: Optional[Literal["truncate", "drop"]] = Field(
        None, description="SFT: a conversation longer than cutoff_len is truncated, or dropped; both are counted.")
    on_bad_record: Optional[Literal["error", "skip"]] = Field(
        None, description="A malformed record (bad JSON, a missing column, a conversation the template rejects): "
        "an error naming file:line (default), or skipped and counted, up to max_bad_records.")
    max_bad_records: Optional[float] = Field(
        None, ge=0, description="With on_bad_record = \"skip\": at most this share (below 1) or this many "
        "(1 or more) records skipped; more is an error.")
    packing: Optional[bool] = Field(None, description="SFT: several examples per row, no attention across "
                                    "them (exact). Pre-training always packs documents into full blocks.")
    val_size: Optional[float] = Field(None, ge=0, description="Hold out this share (below 1) or this many "
                                      "records (1 or more) of the stage's data to evaluate on.")
    eval_steps: Optional[int] = Field(None, gt=0, description="Evaluate every N steps (besides before and "
                                      "after the stage); default: only before and after.")
    per_device_eval_batch_size: Optional[int] = Field(
        None, gt=0, description="Sequences (or packed rows) per evaluation batch; default: "
        "per_device_train_batch_size. Evaluation goes through the stage's loss (no full logits).")
    # optimisation
    learning_rate: Optional[float] = Field(None, gt=0, lt=1)
    lr_scheduler_type: Optional[Scheduler] = None
    warmup_steps: Optional[int] = Field(None, ge=0, description="Linear warmup steps (wins over warmup_ratio).")
    warmup_ratio: Optional[float] = Field(None, ge=0, lt=1, description="Warmup as a share of all steps.")
    per_device_train_batch_size: Optional[int] = Field(None, gt=0)
    gradient_accumulation_steps: Optional[int] = Field(None, gt=0)
    num_train_epochs: Optional[float] = Field(None, gt=0)
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps.")
    optim: Optional[str] = Field(None, description="An HF Trainer optimizer name, e.g. adamw_torch.")
    adam_beta1: Optional[float] = Field(None, ge=0, lt=1)
    adam_beta2: Optional[float] = Field(None, ge=0, lt=1)
    weight_decay: Optional[float] = Field(None, ge=0)
    max_grad_norm: Optional[float] = Field(None, ge=0)
    precision: Optional[Precision] = Field(
        None, description="auto: bf16 on GPUs that support it, else fp16 on GPU, else fp32 on CPU.")
    gradient_checkpointing: Optional[bool] = None
    attn_implementation: Optional[Literal["auto", "sdpa", "eager", "flash_attention_2"]] = Field(
        None, description="The attention kernel passed to from_pretrained. auto: flash_attention_2 where the "
        "flash-attn package is installed and a GPU is present, else sdpa.")
    logging_steps: Optional[int] = Field(None, gt=0)
    seed: Optional[int] = None
    # checkpoints and guards (they do not change what a stage computes: not part of its fingerprint)
    save_steps: Optional[int] = Field(None, gt=0, description="Save a resumable checkpoint every N optimizer steps.")
    save_total_limit: Optional[int] = Field(None, gt=0, description="Keep the last K checkpoints.")
    skip_nonfinite_batches: Optional[int] = Field(
        None, ge=0, description="Skip up to N batches whose loss is NaN/inf (0: stop at the first one).")

    @field_validator("lora_target")
    @classmethod
    def _targets(cls, value):
        if isinstance(value, str):
            names = [v.strip() for v in value.split(",") if v.strip()]
            if not names:
                raise ValueError('give "all" or module names such as ["q_proj", "v_proj"]')
            return "all" if names == ["all"] else names
        if isinstance(value, list) and not value:
            raise ValueError('give "all" or at least one module name')
        return value

    @field_validator("init_lora_weights")
    @classmethod
    def _init(cls, value):
        if value is None or value in LORA_INITS or re.fullmatch(r"pissa_niter_[1-9][0-9]*", value):
            return value
        if value == "loftq":
            raise ValueError('"loftq" is not supported: its adapter only fits the LoftQ-quantized base it was '
                             'built on; use "pissa" or QLoRA')
        raise ValueError('give "default", "gaussian", "pissa", "pissa_niter_N" (N a positive number) or "olora"')

    @field_validator("train_tokens", mode="before")
    @classmethod
    def _train_tokens(cls, value):
        if value is True:
            raise ValueError('give "auto", false, or a list of token strings such as ["<|im_start|>", "<|im_end|>"]')
        if isinstance(value, list) and (not value or len(set(value)) != len(value)):
            raise ValueError("give at least one token, each once (or false for none)")
        return value


LORA_INITS = ("default", "gaussian", "pissa", "olora")

# The seed plan (shared/reference/seed-plan.md), per stage kind.
_PRETRAIN_DEFAULTS: dict[str, Any] = dict(
    lora_rank=16, lora_alpha=16.0, lora_dropout=0.05, lora_target="all", use_rslora=False, use_dora=False,
    init_lora_weights="default", loraplus_lr_ratio=None, embedding_learning_rate=None, neftune_noise_alpha=None,
    train_tokens="auto", cutoff_len=2048,
    learning_rate=1e-4, lr_scheduler_type="cosine", warmup_steps=None, warmup_ratio=0.03,
    per_device_train_batch_size=4, gradient_accumulation_steps=8, num_train_epochs=2.0,
    max_steps=None, optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, weight_decay=0.0,
    max_grad_norm=1.0, precision="auto", gradient_checkpointing=True, attn_implementation="auto", logging_steps=10, seed=42,
    save_steps=500, save_total_limit=2, skip_nonfinite_batches=0, overlong_examples="truncate",
    on_bad_record="error", max_bad_records=0.01, packing=False, chaining="merge", loss="chunked", loss_options={},
    val_size=0.0, eval_steps=None, per_device_eval_batch_size=None,
)
# Settings that change how a stage is run and watched, not what it computes (the attention kernel
# computes the same attention, within float rounding).
OPERATIONAL_SETTINGS = ("logging_steps", "save_steps", "save_total_limit", "skip_nonfinite_batches", "eval_steps",
                        "attn_implementation", "per_device_eval_batch_size")
SEED_PLAN = _PRETRAIN_DEFAULTS  # what a stage kind's own defaults (``StageKind.defaults``) start from
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": _PRETRAIN_DEFAULTS,
    # SFT differs in: no dropout, shorter sequences, half the rate, effective batch 16, one epoch
    "sft": {**_PRETRAIN_DEFAULTS, "lora_dropout": 0.0, "cutoff_len": 1024, "learning_rate": 5e-5,
            "gradient_accumulation_steps": 4, "num_train_epochs": 1.0, "packing": True},
}


class Stage(Settings):
    """One stage of the plan."""

    name: str = Field(description="Unique name; also the stage's folder in the run folder.")
    kind: str = Field(description='"pretrain", "sft", or a stage kind a plugin provides (`recipes plugins` '
                      'lists them; "dpo" and "kto" come with plugins/recipes-trl).')
    kind_options: dict[str, Any] = Field(
        default_factory=dict, description="The stage kind's own settings, e.g. {beta = 0.1} for dpo "
        "(`recipes schema` lists each kind's).")
    base: Optional[str] = Field(
        None, description='"model" (the recipe\'s [model]) or the name of an earlier stage. '
        "Default: the previous stage, or the model for the first stage.")
    data: list[DataSource] = Field(min_length=1)
    eval_data: list[DataSource] = Field(
        default_factory=list, description="Extra evaluation sets, e.g. general text to measure what the model "
        "forgets: perplexity before and after the stage (documents: every token; conversations: the trained ones).")
    samples: Optional[list[SamplePrompt]] = Field(
        None, description="This stage's sample prompts instead of the recipe's `samples` (`[]`: none for this "
        "stage). A pre-training stage continues them as text, an SFT stage answers them as chat.")
    benchmarks: bool = Field(True, description="false: the recipe's [[benchmarks]] are not scored after this stage.")
    decontaminate: bool = Field(True, description="Remove training documents that share a long n-gram with an "
                                "evaluation set of the plan or a benchmark item (counted as \"contaminated\").")
    quantization: Optional[Union[Literal["none"], Quantization]] = Field(
        None, description='This stage\'s own [stages.quantization] table (the fields of the '
        'recipe\'s [quantization]), or "none" for unquantized weights; default: the recipe\'s [quantization]. '
        "A stage whose quantization differs from its base stage's starts from that stage's merged model "
        "(chaining \"merge\"), quantized as it loads.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("use letters, digits, '_', '-' or '.', starting with a letter or digit")
        if value == MODEL_REF:
            raise ValueError(f'"{MODEL_REF}" is reserved for the recipe\'s [model]; pick another name')
        return value

    @model_validator(mode="after")
    def _noise_for_sft(self):
        if self.neftune_noise_alpha is not None and self.kind == "pretrain":
            raise ValueError("neftune_noise_alpha: NEFTune is for SFT stages; remove it from this pre-training stage")
        return self

    # the seed settings of the stage's kind, from its plugin (set when the recipe is checked against
    # the registry); None: the built-in table
    _kind_defaults: Optional[dict] = PrivateAttr(None)

    def settings(self, defaults: Settings) -> "StageSettings":
        """The stage's complete settings: stage, then [defaults], then the seed plan for its kind
        (NEFTune from [defaults] reaches SFT stages only)."""
        kind = self._kind_defaults
        merged = {**SEED_PLAN, **(kind if kind is not None else KIND_DEFAULTS.get(self.kind, {}))}
        for source in (defaults, self):
            for key in Settings.model_fields:
                value = getattr(source, key)
                if value is not None:
                    merged[key] = value
        if self.kind == "pretrain":
            merged["neftune_noise_alpha"] = None
        return StageSettings(**merged)


class StageSettings(BaseModel):
    """One stage's complete, resolved settings: typed and frozen (every key of ``Settings``, none
    missing). What the planning, data and training phases read, as attributes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lora_rank: int
    lora_alpha: float
    lora_dropout: float
    lora_target: Union[str, tuple[str, ...]]
    use_rslora: bool
    use_dora: bool
    init_lora_weights: str
    loraplus_lr_ratio: Optional[float]
    embedding_learning_rate: Optional[float]
    neftune_noise_alpha: Optional[float]
    train_tokens: Union[Literal["auto", False], tuple[str, ...]]
    chaining: Literal["merge", "continue", "stack"]
    loss: str
    loss_options: dict[str, Any]
    cutoff_len: int
    overlong_examples: Literal["truncate", "drop"]
    on_bad_record: Literal["error", "skip"]
    max_bad_records: float
    packing: bool
    val_size: float
    eval_steps: Optional[int]
    per_device_eval_batch_size: Optional[int]
    learning_rate: float
    lr_scheduler_type: Scheduler
    warmup_steps: Optional[int]
    warmup_ratio: float
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    num_train_epochs: float
    max_steps: Optional[int]
    optim: str
    adam_beta1: float
    adam_beta2: float
    weight_decay: float
    max_grad_norm: float
    precision: Precision
    gradient_checkpointing: bool
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"]
    logging_steps: int
    seed: int
    save_steps: int
    save_total_limit: int
    skip_nonfinite_batches: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: for recipe.json and the fingerprint."""
        return self.model_dump(mode="json")


class Recipe(Strict):
    """A whole plan: one model, optional quantization, shared defaults, ordered stages."""

    name: Optional[str] = Field(None, description="Names the run folder; default: the file's stem.")
    description: str = ""
    samples: list[SamplePrompt] = Field(
        default_factory=list, description="Prompts answered greedily by the starting model and after every stage, "
        "side by side in the report and the run log: a pre-training stage continues each as text, an SFT stage "
        "answers each as a chat message. A top-level key: put it above the first [table].")
    samples_max_new_tokens: int = Field(64, gt=0, le=4096, description="New tokens per sample answer.")
    eval_matrix: bool = Field(True, description="Evaluate every stage's evaluation sets on the starting model and "
                              "after every stage (a table in the report: does domain perplexity fall while general "
                              "perplexity holds?); false: each stage evaluates only its own sets, before and after.")
    output_dir: Optional[str] = Field(
        None, description="Run folder, relative to the recipe file (a bundled recipe's: to the current "
        "directory). Default: runs/<name> beside the recipe, so that a run started from another directory finds it.")
    model: ModelSource
    quantization: Optional[Quantization] = None
    callbacks: Optional[list[str]] = Field(
        None, description="Callback plugins to use; default: every callback marked default.")
    distributed: Distributed = Field(default_factory=Distributed)
    benchmarks: list[Benchmark] = Field(
        default_factory=list, description="Multiple-choice benchmarks ([[benchmarks]] tables) scored on the "
        "starting model and after every stage, as part of the evaluation matrix (eval_matrix = false: not scored).")
    defaults: Settings = Field(default_factory=Settings)
    stages: list[Stage] = Field(min_length=1)

    def base_of(self, index: int) -> str:
        """What stage ``index`` starts from: its ``base``, else the previous stage, else the model."""
        return self.stages[index].base or (self.stages[index - 1].name if index else MODEL_REF)

    def stage_quantization(self, index: int) -> Optional[Quantization]:
        """How stage ``index`` loads its weights: its own table, else the recipe's (None: unquantized)."""
        own = self.stages[index].quantization
        if own is None:
            return self.quantization
        return None if own == "none" or own.backend == "none" else own

    def stage_samples(self, index: int) -> list[str]:
        """The prompts stage ``index`` answers: its own ``samples``, else the recipe's."""
        own = self.stages[index].samples
        return list(self.samples if own is None else own)


def did_you_mean(value: str, choices: list[str]) -> str:
    """A hint for an unknown name: the closest known one, and the list of known ones."""
    from difflib import get_close_matches

    close = get_close_matches(value, choices, n=1, cutoff=0.6)
    if close:
        return f'did you mean "{close[0]}"?'
    return "known: " + (", ".join(f'"{c}"' for c in choices) or "none")



assert all(set(d) == set(Settings.model_fields) == set(StageSettings.model_fields) for d in KIND_DEFAULTS.values())
