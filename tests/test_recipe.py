"""Recipes: inheritance, overrides, and errors that say file, line, key, what is valid."""
from pathlib import Path

import pytest

from edgeft.errors import RecipeError
from edgeft.recipe import list_recipes, load_recipe


def _w(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


def test_shipped_recipes_all_validate():
    names = list_recipes()
    for must in ("image_cls/resnet18", "image_cls/efficientnet_lite0", "image_cls/mobilenet_v3_small",
                 "image_cls/mobilenet_v3_large", "image_cls/default"):
        assert must in names
    for n in names:
        r = load_recipe(n)
        assert r.name and r.model.name
    # each runnable recipe gets its own default run folder (runs/<name>): two demos never collide
    rs = [load_recipe(n) for n in names]
    assert len({r.name for r in rs}) == len(rs), sorted(r.name for r in rs)


def test_base_inheritance_and_overrides(tmp_path):
    _w(tmp_path / "base.yaml", "task: image_cls\nmodel: {name: resnet18}\ntrain: {epochs: 10, lr: 0.1}\n")
    child = _w(tmp_path / "child.yaml", "_base_: base.yaml\ntrain: {lr: 0.01}\n")
    r = load_recipe(child, ["train.epochs=3", "input.mean=[0.1, 0.2, 0.3]", "model.pretrained=true"])
    assert (r.train.epochs, r.train.lr) == (3, 0.01)          # child overrides base, --set overrides both
    assert r.input.mean == (0.1, 0.2, 0.3) and r.model.pretrained is True
    assert r.name == "child"
    assert load_recipe(child).hash() != r.hash()
    _w(tmp_path / "named.yaml", "_base_: base.yaml\nname: demo\n")
    assert load_recipe(tmp_path / "named.yaml").name == "demo"
    _w(tmp_path / "grandchild.yaml", "_base_: named.yaml\n")
    assert load_recipe(tmp_path / "grandchild.yaml").name == "grandchild"    # a name is never inherited


def test_yes_no_stay_strings(tmp_path):
    p = _w(tmp_path / "r.yaml", "task: image_cls\nmodel: {name: resnet18}\ndescription: no\n")
    assert load_recipe(p).description == "no"


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    p = _w(tmp_path / "r.yaml", "task: image_cls\nmodel:\n  name: resnet18\ntrain:\n  epochs: 2\n  lr_rate: 0.1\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = e.value.one_line()
    assert "r.yaml:6" in msg and "'train.lr_rate'" in msg and "'lr'" in msg and "Valid keys in train" in msg


def test_unknown_key_in_base_points_at_base(tmp_path):
    _w(tmp_path / "base.yaml", "task: image_cls\nmodel: {name: resnet18}\naugment:\n  hflipp: true\n")
    p = _w(tmp_path / "child.yaml", "_base_: base.yaml\n")
    with pytest.raises(RecipeError, match=r"base.yaml:4: unknown key 'augment.hflipp'.*'hflip'"):
        load_recipe(p)


def test_wrong_type_says_key_value_and_valid(tmp_path):
    p = _w(tmp_path / "r.yaml", "task: image_cls\nmodel: {name: resnet18}\ntrain:\n  epochs: ten\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    msg = e.value.one_line()
    assert "r.yaml:4" in msg and "train.epochs" in msg and "'ten'" in msg and "integer" in msg
    with pytest.raises(RecipeError, match=r"train.optimizer: Input should be 'adamw' or 'sgd'; got 'adam'"):
        load_recipe(p, ["train.epochs=2", "train.optimizer=adam"])


def test_override_errors(tmp_path):
    p = _w(tmp_path / "r.yaml", "task: image_cls\nmodel: {name: resnet18}\n")
    with pytest.raises(RecipeError, match="--set train.epochz=3: unknown key 'train.epochz'.*'epochs'"):
        load_recipe(p, ["train.epochz=3"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(p, ["train.epochs"])
    with pytest.raises(RecipeError, match="must be >= input.size"):
        load_recipe(p, ["input.size=64", "input.resize=32"])


def test_yaml_syntax_task_and_cycle_errors(tmp_path):
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        load_recipe(_w(tmp_path / "bad.yaml", "task: image_cls\nmodel: [unclosed\n"))
    with pytest.raises(RecipeError, match="unknown task 'image_clf'.*'image_cls'"):
        load_recipe(_w(tmp_path / "t.yaml", "task: image_clf\nmodel: {name: x}\n"))
    with pytest.raises(RecipeError, match="missing key 'task'"):
        load_recipe(_w(tmp_path / "nt.yaml", "model: {name: x}\n"))
    _w(tmp_path / "a.yaml", "_base_: b.yaml\n")
    _w(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(tmp_path / "a.yaml")
    with pytest.raises(RecipeError, match="not found.*Did you mean.*resnet18"):
        load_recipe("resnet81")


def test_resolved_recipe_round_trips(tmp_path):
    r = load_recipe("image_cls/efficientnet_lite0", ["train.epochs=1"])
    p = _w(tmp_path / "resolved.yaml", r.to_yaml("# header\n"))
    r2 = load_recipe(p)
    assert r2.hash() == r.hash()
