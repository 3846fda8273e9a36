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
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import RecipeError, did_you_mean
from .sections import (RECIPE_CLASSES, BenchCfg, CompressCfg, DataCfg, ExportCfg,  # noqa: F401
                       ExportTarget, ModelCfg, PruneCfg, QatCfg, RecipeBase, Section, TrainCfg,
                       register_recipe_class)

REPO_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


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
        bdata.pop("name", None)     # a recipe's name (its default run folder) is its own, never inherited
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


def load_recipe(recipe: str | os.PathLike, overrides=()) -> RecipeBase:
    """Load, merge bases, apply ``--set`` overrides, validate. Raises :class:`RecipeError` on any problem."""
    path = resolve_recipe_path(recipe)
    data, prov = _load_file(path)
    apply_overrides(data, prov, overrides)
    return validate_recipe(data, prov, default_name=path.stem, where=_rel(path))


def recipe_from_dict(data: dict, where: str = "<recipe>") -> RecipeBase:
    return validate_recipe(copy.deepcopy(data), {}, default_name=data.get("name") or "recipe", where=where)


def validate_recipe(data: dict, prov: dict, default_name: str, where: str) -> RecipeBase:
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
    """Import every registered task's recipe module (each registers its recipe class; torch-free)."""
    from .tasks import TASKS, recipe_module

    for name in TASKS:
        if name not in RECIPE_CLASSES:
            recipe_module(name)


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
