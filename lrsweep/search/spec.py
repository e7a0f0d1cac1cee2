"""Read and validate a study file (`studies/*.toml`) into frozen dataclasses.

A scalar fixes a value, a list is a categorical (a grid axis for the grid sampler), a table
is a range. Every error is a SpecError whose one line names the file, the key and the problem.

    >>> from lrsweep.search import spec
    >>> s = spec.parse('''
    ... [study]
    ... name = "demo"
    ... [train]
    ... epochs = 5
    ... [space]
    ... scheduler = ["constant", "cosine"]
    ... base_lr = { low = 0.01, high = 1.0, log = true }
    ... ''', source="demo.toml")
    >>> s.study.trials, s.study.sampler, s.dimension("base_lr")
    (20, 'tpe', Range(low=0.01, high=1.0, log=True, integer=False))
"""

from __future__ import annotations

import difflib
import functools
import re
import tomllib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from lrsweep.search.spec_checks import check_bounds, read_space, read_study, read_train
from lrsweep.search.spec_runs import read_runs
# The study file's vocabulary, re-exported: the rest of lrsweep reads it from here.
from lrsweep.search.spec_types import (AVERAGING_OPTIMIZERS, BOOK_METRICS, GENERIC_KEYS,
                                       INTEGER_KEYS, MAX_LABEL, MAX_SEED, METRICS,
                                       NOT_SCHEDULE_KEYS, RUN_KEY, SCHEDULE_KEYS, STUDY_FILE_ATTR,
                                       STUDY_FILE_PREFIX, STUDY_FILES_ATTR, Choice, Dimension,
                                       Fixed, Range, Run, SpecError, StudySettings, StudySpec,
                                       TrainSettings, toml_text)
from lrsweep.search.spec_values import only_keys

__all__ = ["load", "parse", "from_stored", "is_stored_file", "stored_files",
           "stored_trains_like", "AVERAGING_OPTIMIZERS", "BOOK_METRICS", "GENERIC_KEYS",
           "INTEGER_KEYS", "MAX_LABEL", "MAX_SEED", "METRICS", "NOT_SCHEDULE_KEYS", "RUN_KEY",
           "SCHEDULE_KEYS", "STUDY_FILE_ATTR", "STUDY_FILE_PREFIX", "STUDY_FILES_ATTR", "Choice", "Dimension", "Fixed", "Range", "Run", "SpecError", "StudySettings",
           "StudySpec", "TrainSettings"]


def load(path: str | Path, overrides: Sequence[str] = ()) -> StudySpec:
    """Read and validate a study file, with `--set section.key=value` overrides."""
    path = Path(path)
    try:
        # utf-8-sig: a byte-order mark (some Windows editors write one) is no part of the text.
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such study file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot be read ({exc})") from None
    spec = parse(text, source=str(path), overrides=overrides)
    if spec.study.sampler != "grid" and spec.study.trials > 1 and not any(
            isinstance(d, Range) or len(getattr(d, "values", ())) > 1 for _, d in spec.space):
        warnings.warn(f"{path}: [space] fixes every value, so the {spec.study.trials} trials "
                      f"sampler {spec.study.sampler!r} asks are one configuration and seed, "
                      "trained alike (a report counts it once): give a list or a range to "
                      "search, or sampler = \"grid\" for its one trial", stacklevel=2)
    return spec


def from_stored(attrs: dict[str, Any], *, source: str, to_run: bool = False
                ) -> StudySpec | None:
    """The spec a study was run with, from its user attributes (None: not made by lrsweep).
    To read a study it need not meet the bounds added since it was stored (`check_bounds`);
    `to_run` it must, all but its name's (the store holds that name already)."""
    if "study_file" not in attrs:
        return None
    return parse(attrs["study_file"], source=source, overrides=attrs.get("study_overrides", ()),
                 bounds="stored" if to_run else "none")


def is_stored_file(attrs: dict[str, Any], spec: StudySpec) -> bool:
    """Whether a study's user attributes hold exactly `spec` as its file (text and overrides)."""
    return (attrs.get("study_file") == spec.text
            and tuple(attrs.get("study_overrides", ())) == spec.overrides)


def stored_files(user_attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every study file a study ran under, by identity, from its user attributes."""
    files = dict(user_attrs.get(STUDY_FILES_ATTR, {}))
    files.update({key[len(STUDY_FILE_PREFIX):]: value for key, value in user_attrs.items()
                  if key.startswith(STUDY_FILE_PREFIX)})
    return files


def stored_trains_like(stored: dict[str, Any] | None, current: StudySpec) -> bool:
    """Whether a study file the store keeps ({"text": …, "overrides": […]}, an entry of
    `stored_files`) trains as `current` does (`StudySpec.training`): both parsed by this
    version, so comments, the trial total, how trials are chosen and a newer lrsweep's
    defaults make no difference. A file this version no longer reads, or none, does not."""
    if stored is None:
        return False
    training = _training(stored["text"], tuple(stored.get("overrides", ())))
    return training == current.training()


@functools.lru_cache(maxsize=16)
def _training(text: str, overrides: tuple[str, ...]) -> str | None:
    """What a stored file trains (`StudySpec.training`); None: this version cannot read it.
    Cached: a run checks the stored file before every ask."""
    try:
        return parse(text, overrides=overrides, bounds="none").training()
    except SpecError:
        return None


def parse(text: str, *, source: str = "<string>", overrides: Sequence[str] = (),
          bounds: str = "all") -> StudySpec:
    """Validate a study file's text; `source` names it in error messages. Each override
    `section.key=value` (a TOML value; a bare word is a string) replaces or adds that key;
    `section.key=` (nothing after `=`) removes it. An error an override causes names it.
    `bounds`: "all" (a new study), "stored" (all but the name's) or "none" (to read it)."""
    # As load(): the stored text, and so the study's sha256, never begins with a BOM.
    text = text.removeprefix("\ufeff")
    doc = _toml(text, source)
    overrides = tuple(overrides)
    for override in overrides:
        _apply_override(doc, override, source)
    try:
        spec = _validate(doc, text, source, overrides)
        if bounds != "none":
            check_bounds(spec, name=bounds == "all")
        return spec
    except SpecError as exc:
        if not overrides:
            raise
        raise _blame(exc, text, source, overrides, bounds) from None


def _toml(text: str, source: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source}: invalid TOML: {exc}") from None


def _blame(exc: SpecError, text: str, source: str, overrides: tuple[str, ...], bounds: str
           ) -> SpecError:
    """The error with the override it comes from: the one that set the key it names (the last
    for a key wins), else all of them when the file alone does not fail this way."""
    message = str(exc)
    rest = message.removeprefix(f"{source}: ")
    for override in reversed(overrides):
        section, _, key = override.partition("=")[0].strip().partition(".")
        key = key.strip()
        named = re.escape(key.partition(".")[0])  # a dotted key's errors name its first part
        if re.match(rf"\[{re.escape(section)}\] ({named}\b|unknown key '{re.escape(key)}')",
                    rest):
            return SpecError(f"{source}: --set {override}: {rest}")
    try:
        parse(text, source=source, bounds=bounds)
    except SpecError as alone:
        if str(alone) == message:
            return exc  # the file's own error; the overrides change nothing in it
    flags = " ".join(f"--set {o}" for o in overrides)
    return SpecError(f"{source} with {flags}: {rest}")


def _validate(doc: dict, text: str, source: str, overrides: tuple[str, ...]) -> StudySpec:
    only_keys(doc, ("study", "train", "space", "run"), f"{source}: ")
    for section in ("study", "train", "space"):
        if not isinstance(doc.get(section, {}), dict):
            raise SpecError(f"{source}: [{section}] must be a table")
    train = read_train(doc.get("train", {}), source)
    if "model" in doc.get("train", {}) and "model" in doc.get("space", {}):
        raise SpecError(f"{source}: [space] model: the model is also set in [train]; give it in "
                        "one place ([space] to compare models)")
    runs: tuple[Run, ...] = ()
    if "run" in doc:
        space, runs = read_runs(doc["run"], doc.get("space", {}), train, source)
        study_table = doc.setdefault("study", {})
        if study_table.setdefault("sampler", "grid") != "grid":
            sampler = toml_text(study_table["sampler"])
            raise SpecError(f"{source}: [study] sampler = {sampler}: [[run]] tables list every "
                            "configuration, so they need sampler = \"grid\"")
    else:
        space = read_space(doc.get("space", {}), train, source)
    study = read_study(doc.get("study", {}), train, source)
    spec = StudySpec(study, train, space, text, source, overrides, runs)
    averaging = set(spec.values_of("optimizer", "sgd")) & set(AVERAGING_OPTIMIZERS)
    if averaging and spec.models != ("lenet",):
        model = next(m for m in spec.models if m != "lenet")
        who = "SGLD" if averaging == {"sgld"} else "SGLD and sgld_without_noise"
        raise SpecError(f"{source}: [space] optimizer: {who} trials train the packed LeNet "
                        f"only, not model = {toml_text(model)}")
    if spec.study.sampler == "grid":
        for key, dim in space:
            if isinstance(dim, Range):
                raise SpecError(f"{source}: [space] {key}: the grid sampler needs a value or a "
                                "list, not a range")
        size = len(spec.grid())
        if "trials" not in doc.get("study", {}):
            spec = replace(spec, study=replace(spec.study, trials=size))
        elif spec.study.trials > size:
            raise SpecError(f"{source}: [study] trials = {spec.study.trials} but the grid has only "
                            f"{size} distinct points")
    return spec


def _apply_override(doc: dict, override: str, source: str) -> None:
    where = f"{source}: --set {override}"
    path, sep, raw = override.partition("=")
    section, dot, key = path.strip().partition(".")
    if not sep or not dot or not key:
        raise SpecError(f"{where}: expected section.key=value, e.g. train.epochs=10")
    if section not in ("study", "train", "space"):
        close = difflib.get_close_matches(section, ["study", "train", "space"], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (study, train or space)"
        raise SpecError(f"{where}: unknown section {section!r}{hint}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if raw.strip()[:1] in ("[", "{", '"', "'"):  # meant as TOML: reading it as a word hides why
            reason = str(exc).split(" (at ")[0].lower()
            raise SpecError(f"{where}: not a TOML value ({reason}); a list, table or quoted "
                            "string is written whole, its strings quoted, e.g. space.seed=[0,1] "
                            "or 'space.scheduler=[\"cosine\",\"poly\"]'") from None
        value = raw.strip()  # `study.name=ex1-cpu`: a bare word is the string it spells
    table = doc.setdefault(section, {})
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [{section}] must be a table")
    key = key.strip()
    if not raw.strip():  # `section.key=`: remove the key (a string "" is written `key=""`)
        if key not in table:
            close = difflib.get_close_matches(key, list(table), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"{where}: [{section}] has no key {key!r} to remove{hint}")
        del table[key]
        return
    table[key] = value
