"""Typed YAML recipes: ``_base_`` inheritance, ``--set a.b=c`` overrides, errors that name file and line.

A recipe is a YAML mapping validated by a pydantic model chosen by its ``task`` key (``image_cls`` or
``kws``). Sections map one-to-one to stages (``train`` -> finetune, ``export``, ``compress``, ``bench``),
and the key names match the CLI flags (``calib_size`` <-> ``--calib-size``).

Example::

    from edgeft.recipe import load_recipe
    r = load_recipe("recipes/image_cls/resnet18.yaml", ["train.epochs=3"])
    r.train.epochs  # 3
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import RecipeError, did_you_mean
from .targets import TARGET_NAMES

REPO_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


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


class ImageInputCfg(Section):
    """Deployment preprocessing: identical in training eval, export parity and the torch-free runtime."""

    size: int = Field(32, ge=8, le=1024, description="model input height = width")
    resize: Optional[int] = Field(None, ge=8, le=2048, description="resize target before the center crop")
    resize_mode: Literal["square", "shorter"] = "square"
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @model_validator(mode="after")
    def _check(self):
        if self.resize is not None and self.resize < self.size:
            raise ValueError(f"input.resize ({self.resize}) must be >= input.size ({self.size})")
        if any(s <= 0 for s in self.std):
            raise ValueError("input.std values must be > 0")
        return self

    @property
    def resize_to(self) -> int:
        return self.resize or self.size


class AugmentCfg(Section):
    hflip: bool = True
    pad_crop: int = Field(0, ge=0, description="random crop after zero padding by N pixels")
    random_resized_crop: Optional[tuple[float, float]] = Field(None, description="area scale range, e.g. [0.5, 1]")

    @field_validator("random_resized_crop")
    @classmethod
    def _rrc(cls, v):
        if v is not None and not (0 < v[0] <= v[1] <= 1):
            raise ValueError("needs 0 < low <= high <= 1")
        return v


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
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    grad_clip: Optional[float] = Field(5.0, gt=0)
    bn_momentum: Optional[float] = Field(
        0.1, gt=0, lt=1, description="BatchNorm running-stat momentum while training (null: keep the model's). "
        "torchvision's MobileNetV3/EfficientNet use 0.01, tuned for ImageNet-length epochs: over a few hundred "
        "steps their running statistics lag the weights and eval collapses to one class (seen: MobileNetV3-Small, "
        "3 epochs of 94 steps, val top-1 0.10 with 0.01)")
    early_stopping_patience: Optional[int] = Field(None, gt=0, description="stop after N epochs without val gain")
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


class BenchCfg(Section):
    data: Optional[str] = Field(None, description="held-out data for `edgeft run`'s bench (default: the built-in "
                                                  "dataset's test split, or DATA/test | DATA/val)")
    scenario: Literal["single_stream", "offline", "camera", "audio_stream"] = "single_stream"
    profile: Literal["smoke", "dev", "report"] = "dev"
    threads: Optional[int] = Field(None, gt=0)
    data_limit: Optional[int] = Field(None, gt=0, description="accuracy run on the first N samples only")
    reference: bool = Field(True, description="include the PyTorch FP32 run as the reference row")


class _RecipeBase(Section):
    name: Optional[str] = None
    description: str = ""
    model: ModelCfg
    data: DataCfg = Field(default_factory=DataCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    export: ExportCfg = Field(default_factory=ExportCfg)
    compress: CompressCfg = Field(default_factory=CompressCfg)
    bench: BenchCfg = Field(default_factory=BenchCfg)

    def hash(self) -> str:
        """Stable hash of the resolved recipe (what produced an artifact)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_yaml(self, header: str = "") -> str:
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, default_flow_style=None)
        return (header + body) if header else body


class ImageClsRecipe(_RecipeBase):
    task: Literal["image_cls"] = "image_cls"
    input: ImageInputCfg = Field(default_factory=ImageInputCfg)
    augment: AugmentCfg = Field(default_factory=AugmentCfg)


Recipe = Union[ImageClsRecipe, Any]  # KwsRecipe is registered by edgeft.tasks.kws

RECIPE_CLASSES: dict[str, type[_RecipeBase]] = {"image_cls": ImageClsRecipe}


def register_recipe_class(task: str, cls: type[_RecipeBase]) -> None:
    RECIPE_CLASSES[task] = cls


# ------------------------------------------------------------------------------------------ loading
class _Loader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false are booleans ('yes', 'no', 'on', 'off' stay strings,
    which matters for keyword lists)."""


_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _yaml_load(text: str, where: str) -> tuple[Any, dict]:
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        loc = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{loc}: invalid YAML: {problem}", hint="fix the syntax at that line") from None
    prov: dict[tuple, str] = {}

    def walk(n, path):
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                prov[path + (key,)] = f"{where}:{k.start_mark.line + 1}"
                walk(v, path + (key,))

    if node is not None:
        walk(node, ())
    return data, prov


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _load_file(path: Path, stack: tuple[Path, ...] = ()) -> tuple[dict, dict]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in stack + (path,))
        raise RecipeError(f"recipe _base_ cycle: {chain}", hint="remove one of the _base_ references")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}") from None
    where = _rel(path)
    data, prov = _yaml_load(text, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe must be a YAML mapping, got {type(data).__name__}",
                          hint="start the file with keys such as 'task:' and 'model:'")
    bases = data.pop("_base_", None)
    if bases is None:
        return data, prov
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError(f"{prov.get(('_base_',), where)}: _base_ must be a path or a list of paths")
    merged: dict = {}
    mprov: dict = {}
    for b in bases:
        bpath = (path.parent / b)
        if not bpath.exists():
            raise RecipeError(f"{prov.get(('_base_',), where)}: _base_ file {b!r} not found (looked at {bpath})",
                              hint="paths are relative to the recipe file")
        bdata, bprov = _load_file(bpath, stack + (path,))
        merged = _deep_merge(merged, bdata)
        mprov.update(bprov)
    mprov.update({k: v for k, v in prov.items() if k != ("_base_",)})
    return _deep_merge(merged, data), mprov


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    if "=" not in item:
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE (e.g. --set train.epochs=3)")
    key, _, val = item.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise RecipeError(f"--set {item!r}: bad key {key!r}", hint="use dotted keys such as train.lr=0.01")
    try:
        value = yaml.load(val, Loader=_Loader) if val.strip() else None
    except yaml.YAMLError:
        value = val
    return tuple(key.split(".")), value


def apply_overrides(data: dict, prov: dict, overrides) -> None:
    for item in overrides or ():
        path, value = parse_override(item)
        d = data
        for i, p in enumerate(path[:-1]):
            nxt = d.get(p)
            if nxt is None:
                nxt = d[p] = {}
            elif not isinstance(nxt, dict):
                raise RecipeError(f"--set {item}: {'.'.join(path[:i + 1])} is a value, not a section")
            d = nxt
        d[path[-1]] = value
        prov[path] = f"--set {item}"
        for i in range(1, len(path)):
            prov.setdefault(path[:i], f"--set {item}")


def resolve_recipe_path(recipe: str | os.PathLike) -> Path:
    """A file path, or a recipe name looked up under recipes/ (e.g. 'image_cls/resnet18' or 'resnet18')."""
    p = Path(recipe)
    if p.is_file():
        return p
    roots = [Path(r) for r in os.environ.get("EDGEFT_RECIPES", "").split(os.pathsep) if r] + [REPO_RECIPES]
    name = str(recipe)
    for root in roots:
        for cand in (root / name, root / f"{name}.yaml"):
            if cand.is_file():
                return cand
        hits = sorted(root.rglob(f"{Path(name).name}.yaml")) if root.is_dir() else []
        hits = [h for h in hits if "_base" not in h.parts]
        if len(hits) == 1:
            return hits[0]
    known = list_recipes()
    raise RecipeError(f"recipe {str(recipe)!r} not found.{did_you_mean(name, known + [Path(k).name for k in known])}",
                      hint="pass a YAML path, or a name from `edgeft recipes`")


def list_recipes() -> list[str]:
    if not REPO_RECIPES.is_dir():
        return []
    return sorted(str(p.relative_to(REPO_RECIPES).with_suffix("")) for p in REPO_RECIPES.rglob("*.yaml")
                  if "_base" not in p.parts)


def load_recipe(recipe: str | os.PathLike, overrides=()) -> _RecipeBase:
    """Load, merge bases, apply ``--set`` overrides, validate. Raises :class:`RecipeError` on any problem."""
    path = resolve_recipe_path(recipe)
    data, prov = _load_file(path)
    apply_overrides(data, prov, overrides)
    return validate_recipe(data, prov, default_name=path.stem, where=_rel(path))


def recipe_from_dict(data: dict, where: str = "<recipe>") -> _RecipeBase:
    return validate_recipe(copy.deepcopy(data), {}, default_name=data.get("name") or "recipe", where=where)


def validate_recipe(data: dict, prov: dict, default_name: str, where: str) -> _RecipeBase:
    _ensure_task_classes()
    task = data.get("task")
    if task is None:
        raise RecipeError(f"{where}: missing key 'task'", hint=f"add 'task: one of {sorted(RECIPE_CLASSES)}'")
    if task not in RECIPE_CLASSES:
        raise RecipeError(f"{prov.get(('task',), where)}: task: unknown task {task!r}.{did_you_mean(task, RECIPE_CLASSES)}"
                          f" Valid: {', '.join(sorted(RECIPE_CLASSES))}.")
    cls = RECIPE_CLASSES[task]
    data.setdefault("name", default_name)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise _format_validation_error(e, cls, prov, where) from None


def _ensure_task_classes() -> None:
    if "kws" not in RECIPE_CLASSES:
        try:
            from .tasks import kws_recipe  # noqa: F401  (registers KwsRecipe; torch-free)
        except ImportError:
            pass


def _model_at(cls: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    import typing

    cur: Any = cls
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in cur.model_fields:
            return None
        ann = cur.model_fields[part].annotation
        # unwrap Optional[X] / list[X]
        for _ in range(3):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                break
            if args:
                ann = args[0]
        cur = ann
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _format_validation_error(e: ValidationError, cls, prov: dict, where: str) -> RecipeError:
    errs = e.errors()
    err = errs[0]
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc) or "<root>"
    key_loc = tuple(p for p in loc if not isinstance(p, int))
    src = prov.get(key_loc) or prov.get(key_loc[:-1]) or where
    more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
    if err["type"] == "extra_forbidden":
        parent = _model_at(cls, loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        section = ".".join(str(p) for p in loc[:-1]) or "the recipe"
        msg = (f"{src}: unknown key {dotted!r}.{did_you_mean(str(loc[-1]), valid)} "
               f"Valid keys in {section}: {', '.join(valid)}.{more}")
        return RecipeError(msg, hint="fix or remove the key")
    given = err.get("input")
    given_s = repr(given) if not isinstance(given, dict) else "a mapping"
    if err["type"] == "missing":
        return RecipeError(f"{src}: missing required key {dotted!r}{more}", hint=f"add {dotted} to the recipe")
    msg = err["msg"].replace("Value error, ", "")
    return RecipeError(f"{src}: {dotted}: {msg}; got {given_s}{more}",
                       hint=f"fix the value in the recipe or pass --set {dotted}=VALUE")
