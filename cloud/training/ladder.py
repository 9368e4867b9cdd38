"""Research ladders as data: one base training configuration, a table of rate points per family, expanded on demand.

A ladder is ``cloud/training/ladders/<name>.yaml``: what the family is (``label``, ``description``, its model
``family`` and how it relates to other ladders) and its rate points. A point's training configuration is

    TrainConfig defaults ← configs/base.yaml ← (the parent's recipe ← the parent's point, for each ``extends``
    ancestor, oldest first) ← recipe ← point ← λ of the point's quality (:mod:`facelink.cloud.training.quality`)

so a ladder that ``extends`` another differs from it in exactly the keys it writes: an ablation, a control or a
longer run says what it changes and nothing else. Keys (schema-checked; an unknown key is an error):

- ``label``: the family's curve label in benchmark plots; ``description``: what its models are (manifests);
- ``family``: model names are ``face-<family>-<point>`` (default: the ladder's name);
- ``extends``: a parent ladder whose recipe and points this one starts from;
- ``ablation_of``: ladders this one is the pixel-loss ablation of (same chain, data, seeds; α 0), point by point;
- ``tuned_from``: the ladder whose points this one's points were each fine-tuned from, compared at equal bits in
  benchmark reports;
- ``legacy_names``: only for ladders named before the one quality table: why and how their ``q`` differs; only
  these may give a point ``quality`` (an index into the table other than its name's) or an off-table ``lmbda``;
- ``recipe``: training keys every point shares; ``points``: ``q<k>`` → training keys of that point.

``facelink train --ladder NAME --point q3 --out runs/NAME-q3`` trains one point; ``facelink export --ladder NAME
--point q3 --checkpoint runs/NAME-q3/model.pt`` writes its family, label and relations into its manifest.
Run folders are ``runs/<ladder>-<point>`` (the first model: ``runs/first-model``), which the ``init_from`` paths of
fine-tuned points name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from facelink.cloud.training import quality
from facelink.shared import config as cfgmod

HERE = Path(__file__).resolve().parent
LADDERS_DIR = HERE / "ladders"
BASE_CONFIG = HERE / "configs" / "base.yaml"
POINT_NAME = re.compile(r"^q(\d+)$")
LEGACY_KEYS = ("quality", "lmbda")  # only in a ladder with legacy_names
REQUIRED = ("label", "description", "points")


@dataclass
class Ladder:
    """One ladder file (see the module docstring)."""

    label: str
    description: str
    points: dict[str, Any]
    family: str | None = None
    extends: str | None = None
    ablation_of: list[str] = field(default_factory=list)
    tuned_from: str | None = None
    legacy_names: str | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # set from the file name, not written in it

    @property
    def model_family(self) -> str:
        return self.family or self.name

    def model_name(self, point: str) -> str:
        return f"face-{self.model_family}-{point}"


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise cfgmod.ConfigError(f"{where}: expected a mapping of keys to values, got {value!r}")
    return value


def names(root: Path | None = None) -> list[str]:
    """Every ladder's name (its file name without ``.yaml``)."""
    return sorted(p.stem for p in Path(root or LADDERS_DIR).glob("*.yaml"))


def load(name: str, root: Path | None = None) -> Ladder:
    """The ladder ``name``, checked: schema, point names, the ladders it refers to, legacy keys."""
    return _load(name, str(Path(root or LADDERS_DIR).resolve()))


@cache
def _load(name: str, root: str) -> Ladder:
    import yaml

    path = Path(root) / f"{name}.yaml"
    if not path.is_file():
        raise cfgmod.ConfigError(f"unknown ladder {name!r}; known: {', '.join(names(Path(root))) or 'none'}")
    where = str(path)
    data = yaml.safe_load(path.read_text()) or {}
    if isinstance(data, dict) and "name" in data:
        raise cfgmod.ConfigError(f"{where}: unknown key(s) name (a ladder is named by its file)")
    missing = [k for k in REQUIRED if not isinstance(data, dict) or k not in data]
    if missing:
        raise cfgmod.ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
    lad = cfgmod.from_mapping(Ladder, data, where)
    lad.name = name
    lad.recipe = _mapping(lad.recipe, f"{where}.recipe")
    lad.points = {p: _mapping(v, f"{where}.points.{p}") for p, v in _mapping(lad.points, f"{where}.points").items()}
    if not lad.points:
        raise cfgmod.ConfigError(f"{where}: a ladder needs at least one point")
    for p, keys in lad.points.items():
        if not POINT_NAME.match(p):
            raise cfgmod.ConfigError(f"{where}: point {p!r} is not named q<k>")
        legacy = sorted(set(keys) & set(LEGACY_KEYS))
        if legacy and not lad.legacy_names:
            raise cfgmod.ConfigError(f"{where}.points.{p}: {', '.join(legacy)} only in a ladder with legacy_names; "
                                     f"a point's λ is its name's quality (q{POINT_NAME.match(p).group(1)})")
        if len(legacy) > 1:
            raise cfgmod.ConfigError(f"{where}.points.{p}: give quality or lmbda, not both")
    if "lmbda" in lad.recipe or "quality" in lad.recipe:
        raise cfgmod.ConfigError(f"{where}.recipe: λ is a point's, from its quality, not the recipe's")
    for ref in [lad.extends, lad.tuned_from, *lad.ablation_of]:
        if ref is not None and ref not in names(Path(root)):
            raise cfgmod.ConfigError(f"{where}: refers to unknown ladder {ref!r}")
    return lad


def lineage(name: str, root: Path | None = None) -> list[Ladder]:
    """The ladder and its ``extends`` ancestors, oldest first."""
    chain: list[Ladder] = []
    while name is not None:
        lad = load(name, root)
        if any(c.name == lad.name for c in chain):
            raise cfgmod.ConfigError(f"ladder {name!r} extends itself through {', '.join(c.name for c in chain)}")
        chain.append(lad)
        name = lad.extends
    return chain[::-1]


def _base() -> dict:
    import yaml

    return _mapping(yaml.safe_load(BASE_CONFIG.read_text()), str(BASE_CONFIG))


def point_mapping(name: str, point: str, root: Path | None = None) -> dict:
    """The training keys of one point, merged as the module docstring says, λ resolved (not yet schema-checked)."""
    chain = lineage(name, root)
    leaf = chain[-1]
    if point not in leaf.points:
        raise cfgmod.ConfigError(f"ladder {name!r} has no point {point!r}; its points: {', '.join(leaf.points)}")
    data = _base()
    for lad in chain:
        for layer in (lad.recipe, lad.points.get(point, {})):
            if any(k in layer for k in LEGACY_KEYS):  # a later λ or quality replaces an earlier one
                for k in LEGACY_KEYS:
                    data.pop(k, None)
            data.update(layer)
    named_q = int(POINT_NAME.match(point).group(1))
    q = data.pop("quality", None)
    lam = data.pop("lmbda", None)
    if lam is None:
        try:
            lam = quality.lmbda(named_q if q is None else q)
        except ValueError as e:
            raise cfgmod.ConfigError(f"ladder {name!r} point {point}: {e}") from None
    if quality.quality_of(lam) != named_q and not leaf.legacy_names:
        raise cfgmod.ConfigError(f"ladder {name!r} point {point} is trained at λ {lam}, not q{named_q}'s "
                                 f"{quality.LAMBDAS[named_q] if named_q < len(quality.LAMBDAS) else '(none)'}: "
                                 "name it by its quality or document legacy_names")
    data["lmbda"] = lam
    return data


def expand(name: str, point: str, root: Path | None = None):
    """The schema-checked :class:`~facelink.cloud.training.train.TrainConfig` of one point."""
    from facelink.cloud.training.train import TrainConfig

    return cfgmod.from_mapping(TrainConfig, point_mapping(name, point, root), f"ladder {name} point {point}")


def manifest_fields(name: str, point: str, root: Path | None = None) -> dict:
    """What a model's manifest says of its ladder: family, label, ladder and point, the quality index (None when
    off the table), the models it is an ablation of / was tuned from (None when none), and the naming note."""
    lad = load(name, root)
    same_point = {ref: load(ref, root).model_name(point) for ref in [*lad.ablation_of, lad.tuned_from] if ref}
    return {
        "family": lad.model_family,
        "label": lad.label,
        "ladder": {"name": name, "point": point, "file": f"cloud/training/ladders/{name}.yaml"},
        "quality": quality.quality_of(point_mapping(name, point, root)["lmbda"]),
        "ablation_of": same_point[lad.ablation_of[0]] if lad.ablation_of else None,
        "tuned_from": same_point[lad.tuned_from] if lad.tuned_from else None,
        "name_note": lad.legacy_names,
    }


def export_description(name: str, point: str, root: Path | None = None) -> str:
    return f"{load(name, root).description}, rate point {point} (cloud/training/ladders/{name}.yaml)"


@dataclass(frozen=True)
class Family:
    """A model family as the benchmark shows it: its curve label, its ablation's family, the family it was tuned
    from (each None when none)."""

    label: str
    ablation: str | None
    tuned_from: str | None


def families(root: Path | None = None) -> dict[str, Family]:
    """Model family → :class:`Family`, from every ladder. An IPR family's ablation is the family of the ladder
    that names it in ``ablation_of``; two ablations of one family are an error."""
    ladders = [load(n, root) for n in names(root)]
    fam = {lad.name: lad.model_family for lad in ladders}
    ablation: dict[str, str] = {}
    for lad in ladders:
        for of in lad.ablation_of:
            if fam[of] in ablation:
                raise cfgmod.ConfigError(f"ladders {lad.name} and another both claim to be {of}'s ablation")
            ablation[fam[of]] = lad.model_family
    out: dict[str, Family] = {}
    for lad in ladders:
        if lad.model_family in out:
            raise cfgmod.ConfigError(f"two ladders name model family {lad.model_family!r}")
        out[lad.model_family] = Family(lad.label, ablation.get(lad.model_family),
                                       fam[lad.tuned_from] if lad.tuned_from else None)
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(prog="python -m facelink.cloud.training.ladder",
                                 description="List the research ladders, a ladder's points (in its file's order, "
                                             "the order they are trained in) or one point's training config.")
    ap.add_argument("ladder", nargs="?", help="a ladder's name (cloud/training/ladders/NAME.yaml)")
    ap.add_argument("point", nargs="?", help="one of its points: print its expanded training configuration")
    args = ap.parse_args(argv)
    try:
        if args.ladder is None:
            print(*names())
        elif args.point is None:
            print(*load(args.ladder).points)
        else:
            print(json.dumps(cfgmod.to_dict(expand(args.ladder, args.point)), indent=2))
    except cfgmod.ConfigError as e:
        print(f"ladder: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
