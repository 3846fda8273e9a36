"""Recipe sections shared by every task (model, data, train, export, compress, bench) and the registry of
task recipe classes. Each task's own sections (image input and augmentation, log-mel features...) live in
its folder (``edgeft/tasks/<task>/recipe.py``), which registers its recipe class here. Torch-free.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .targets import TARGET_NAMES


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


# ----------------------------------------------------------------------------------------- sections
class ModelCfg(Section):
    name: str = Field(description="registered model name; `edgeft models` lists them")
    pretrained: bool = Field(False, description="start from the model's pretrained weights (ImageNet)")
    weights: Optional[str] = Field(None, description="local state_dict file (.pth/.pt/.safetensors) to start from")
    dropout: Optional[float] = Field(None, ge=0, lt=1, description="dropout before the head (model default if null)")


class DataCfg(Section):
    source: str = Field("fashion-mnist", description="built-in dataset name or a folder path")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="held-out fraction when the source has no val split")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="extra held-out test fraction for single folders")
    split_seed: int = 0
    train_limit: Optional[int] = Field(None, gt=0, description="use a seeded subset of N training samples")
    val_limit: Optional[int] = Field(None, gt=0)
    test_limit: Optional[int] = Field(None, gt=0)
    strict: bool = Field(False, description="fail on corrupt files instead of skipping them with a warning")
    workers: int = Field(0, ge=0, description="decode threads for image folders (0 = auto)")


class TrainCfg(Section):
    epochs: int = Field(10, gt=0)
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(256, gt=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for the first N epochs")
    freeze: list[str] = Field(default_factory=list, description="parameter-name prefixes never trained (e.g. the early "
                              "backbone stages: no backward through them; measured 2.6x faster SSDLite steps)")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field("auto", description="autocast: auto = bf16/fp16 on GPUs, fp32 "
                                                       "on CPUs (bf16 measured slower there); bf16 = CPU bf16 autocast")
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="keep an EMA of the weights (e.g. 0.998) and "
                                       "validate/keep it instead of the raw weights")
    channels_last: Literal["auto", "on", "off"] = "auto"
    grad_clip: Optional[float] = Field(5.0, gt=0)
    bn_momentum: Optional[float] = Field(
        0.1, gt=0, lt=1, description="BatchNorm running-stat momentum while training (null: keep the model's). "
        "torchvision's MobileNetV3/EfficientNet use 0.01, tuned for ImageNet-length epochs: over a few hundred "
        "steps their running statistics lag the weights and eval collapses to one class (seen: MobileNetV3-Small, "
        "3 epochs of 94 steps, val top-1 0.10 with 0.01)")
    early_stopping_patience: Optional[int] = Field(None, gt=0, description="stop after N epochs without val gain")
    eval_every: int = Field(1, gt=0, description="validate (and keep the best weights) every N epochs and after the "
                            "last one")
    max_batches_per_epoch: Optional[int] = Field(None, gt=0, description="cap an epoch (smoke runs)")
    seed: int = 0
    deterministic: bool = True
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    threads: Optional[int] = Field(None, gt=0, description="torch intra-op threads (default: all cores)")


Format = Literal["onnx", "onnxruntime", "openvino", "tensorrt"]
PrecisionName = Literal["fp32", "fp16", "bf16", "int8"]
TargetName = Literal[TARGET_NAMES]  # host (this machine's CPU class), x86-avx2, x86-vnni, ... (edgeft.targets)


class ExportTarget(Section):
    format: Format
    precision: PrecisionName = "fp32"
    target: Optional[TargetName] = Field(None, description="device class the bundle is for (default: host)")


class ExportCfg(Section):
    targets: list[ExportTarget] = Field(default_factory=lambda: [ExportTarget(format="onnx")])
    opset: int = Field(17, ge=13, le=23)
    calib_size: int = Field(300, gt=0, description="calibration samples for INT8 PTQ")
    parity_samples: int = Field(200, gt=0, description="validation samples for the parity check")
    max_drop: Optional[float] = Field(None, ge=0, description="fail when INT8 val top-1 drops more (points)")


class PruneCfg(Section):
    ratio: float = Field(0.5, gt=0, lt=1, description="fraction of channels removed per prunable layer")
    method: Literal["magnitude", "taylor", "bn_scale", "random"] = "magnitude"
    global_pruning: bool = False
    round_to: Optional[int] = Field(8, gt=0)
    iterative: int = Field(1, gt=0, description="prune in K steps with recovery fine-tuning between them")
    epochs: int = Field(2, ge=0, description="recovery fine-tuning epochs (after each step)")
    lr: Optional[float] = Field(None, gt=0, description="recovery LR (default: train.lr / 10)")
    distill: float = Field(0.0, ge=0, le=1, description="weight of KD loss from the unpruned model (0 = off)")
    max_drop: Optional[float] = Field(None, ge=0)


class QatCfg(Section):
    epochs: int = Field(1, ge=0)
    lr: Optional[float] = Field(None, gt=0, description="QAT LR (default: train.lr / 100)")
    flavour: Literal["cpu", "tensorrt"] = Field(
        "cpu", description="cpu: NNCF u8 activations / s8 weights tuned for the CPU runtime; "
                           "tensorrt: symmetric s8 activations and weights (TensorRT explicit quantization)")
    calib_size: int = Field(300, gt=0)
    max_drop: Optional[float] = Field(None, ge=0)
    target: Optional[TargetName] = Field(None, description="device class the INT8 weights are for (default: host)")


class CompressCfg(Section):
    prune: Optional[PruneCfg] = None
    qat: Optional[QatCfg] = None


class OptimizeCfg(Section):
    """``edgeft optimize`` (and the last stage of ``edgeft run`` when a recipe has an ``optimize:`` section)."""

    max_drop: float = Field(1.0, ge=0, description="points of val top-1 the chosen bundle may lose vs PyTorch FP32")
    backends: list[Literal["openvino", "onnxruntime", "tensorrt"]] = Field(
        default_factory=lambda: ["openvino", "onnxruntime"])
    target: Optional[TargetName] = Field(None, description="device class the bundles are for (default: host)")
    device: Optional[str] = Field(None, description="a device (`edgeft devices add`) to time candidates on")
    time_budget: Optional[str] = Field(None, description="e.g. 30m: no new step starts that would not fit")
    prune: bool = Field(True, description="bisect a pruning ratio against the budget")
    prune_epochs: int = Field(1, ge=0, description="recovery fine-tuning epochs per pruning probe")
    max_ratio: float = Field(0.7, gt=0, lt=1)
    max_probes: int = Field(3, ge=1, description="pruning probes (each one a recovery fine-tune)")
    distill: float = Field(0.0, ge=0, le=1, description="KD weight from the unpruned model during recovery")
    qat: bool = Field(True, description="QAT when no post-training INT8 candidate meets the budget")
    qat_epochs: int = Field(1, ge=0)
    mixed: bool = Field(True, description="INT8 mixed precision (sensitive layers in float) when plain PTQ misses")
    profile: Literal["smoke", "quick", "dev", "report"] = Field("quick", description="bench profile of the "
                                                                 "candidates' latency run")
    report_profile: Literal["smoke", "quick", "dev", "report"] = Field("quick", description="bench profile of the "
                                                                        "test-split report run")
    report_data: Optional[str] = Field(None, description="test data of the report (default: bench.data / the "
                                                         "built-in test split)")
    select: Literal["upper", "point"] = Field("upper", description="within budget: upper = the paired one-sided 95% "
                                              "upper bound of the val drop, point = the point estimate")

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, v):
        if v is not None:
            from .optimize import parse_duration

            try:
                parse_duration(v)
            except Exception as e:  # noqa: BLE001 - pydantic wants ValueError
                raise ValueError(getattr(e, "message", str(e))) from None
        return v

    def settings(self, threads: int | None = None):
        from .optimize import OptimizeSettings, parse_duration

        d = self.model_dump()
        d["backends"] = tuple(d["backends"])
        d["time_budget_s"] = parse_duration(d.pop("time_budget"))
        return OptimizeSettings(**d, threads=threads)


class BenchCfg(Section):
    data: Optional[str] = Field(None, description="held-out data for `edgeft run`'s bench (default: the built-in "
                                                  "dataset's test split, or DATA/test | DATA/val)")
    scenario: str = Field("single_stream", description="a bench scenario (edgeft.bench.scenarios)")

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, v):
        from .bench.scenarios import scenario_names

        if v not in scenario_names():
            raise ValueError(f"unknown scenario {v!r}; valid are {', '.join(scenario_names())}")
        return v
    profile: Literal["smoke", "quick", "dev", "report"] = "dev"
    threads: Optional[int] = Field(None, gt=0)
    data_limit: Optional[int] = Field(None, gt=0, description="accuracy run on the first N samples only")
    reference: bool = Field(True, description="include the PyTorch FP32 run as the reference row")


class RecipeBase(Section):
    name: Optional[str] = None
    description: str = ""
    model: ModelCfg
    data: DataCfg = Field(default_factory=DataCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    export: ExportCfg = Field(default_factory=ExportCfg)
    compress: CompressCfg = Field(default_factory=CompressCfg)
    bench: BenchCfg = Field(default_factory=BenchCfg)
    optimize: Optional[OptimizeCfg] = Field(None, description="end `edgeft run` with `edgeft optimize` (the "
                                                              "fastest bundle within max_drop)")

    def hash(self) -> str:
        """Stable hash of the resolved recipe (what produced an artifact)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self, header: str = "") -> str:
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
        return (header + body) if header else body


RECIPE_CLASSES: dict[str, type[RecipeBase]] = {}


def register_recipe_class(task: str, cls: type[RecipeBase]) -> type[RecipeBase]:
    """Called by each task's recipe module: ``task: NAME`` in a recipe validates with ``cls``."""
    RECIPE_CLASSES[task] = cls
    return cls
