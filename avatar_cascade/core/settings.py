"""One declaration per setting: its default, range and tooltip; the nodes, the CLI and the checks read it.

A stage's settings are a frozen, keyword-only dataclass deriving from :class:`Settings` whose
fields are declared with :func:`setting` (a value: int, float, str, bool or one of some choices)
or :func:`nested` (another settings class with per-stage defaults, e.g. the stage's sampler).
Everything else is derived from the declaration:

* :func:`leaves` walks a settings class (or object) to its values under flat names
  (``lift_steps`` for ``lift.sampler.steps``); the engine default of each is read from a
  default-constructed object, so a nested class's per-stage defaults count;
* :func:`widget` gives a ComfyUI widget spec ``("INT", {"default", "min", "max", "step", "tooltip"})``;
* :func:`from_widget` / :func:`from_text` turn a widget value / a command-line string into the
  engine value, :func:`to_widget` the other way; :func:`build` makes a settings object from flat
  values;
* :meth:`Settings.check` checks every value against its declaration (type, choices, its own
  validator, range), then the rules that tie several values together (:meth:`Settings.check_together`).

Errors are :class:`~avatar_cascade.core.errors.InputError` naming the flat name, the value and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from avatar_cascade.core.errors import InputError

_SPEC = "avatar_cascade.setting"
_NESTED = "avatar_cascade.nested"
_TOOLTIPS = "avatar_cascade.tooltips"


@dataclass(frozen=True)
class Setting:
    """How one setting is shown, parsed and checked.

    Attributes:
        tooltip: what it does, with its unit (shown in ComfyUI and in ``--help``).
        kind: ``"INT"``, ``"FLOAT"``, ``"STRING"``, ``"BOOLEAN"`` or ``"COMBO"``; None = from
            ``choices`` or the default's type.
        min / max: inclusive range of numbers; step: widget step.
        choices: allowed values (a ComfyUI combo); with ``open_choices`` the widget offers them
            but other values are checked elsewhere (e.g. any FFmpeg encoder name).
        optional: None is a valid value (e.g. "no limit").
        none_as: the widget / command-line value that stands for None (e.g. -1 or 0).
        fix: what to write instead of a bad value (the error's "Fix:").
        validate: ``(name, value) -> None``, raising InputError; runs before the range check.
        encode / decode: engine value -> widget value and back (JSON text, ``"auto"`` ...).
        cli: offered as a command-line flag; cli_text: the flag's text reaches ``decode`` /
            the engine as is (e.g. ``--fps 30000/1001``).
        multiline / control_after_generate: ComfyUI widget options.
    """

    tooltip: str
    kind: str | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple | None = None
    open_choices: bool = False
    optional: bool = False
    none_as: Any = None
    fix: str = ""
    validate: Callable[[str, Any], None] | None = None
    encode: Callable[[Any], Any] | None = None
    decode: Callable[[Any], Any] | None = None
    cli: bool = True
    cli_text: bool = False
    multiline: bool = False
    control_after_generate: bool = False


def setting(default: Any = MISSING, *, tooltip: str, default_factory: Any = MISSING, **spec: Any) -> Any:
    """A dataclass field declared once: its default and its :class:`Setting`."""
    meta = {_SPEC: Setting(tooltip=tooltip, **spec)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


def nested(cls: type, *, prefix: str = "", tooltips: Mapping[str, str] | None = None, **defaults: Any) -> Any:
    """A field holding another settings class, with this stage's defaults for some of its values.

    Its values appear under ``prefix + name`` in flat names (widgets, flags, error messages);
    ``tooltips`` replaces the tooltips of some of them where this stage uses them differently.
    """
    meta = {_NESTED: prefix, _TOOLTIPS: dict(tooltips or {})}
    return field(default_factory=lambda: cls(**defaults), metadata=meta)


def validator(check: Callable[[Any], Any]) -> Callable[[str, Any], None]:
    """A ``validate`` hook from a check of one value that names its own input: renamed to the setting."""

    def run(name: str, value: Any) -> None:
        try:
            check(value)
        except InputError as exc:
            raise InputError(name, exc.value, exc.problem, exc.fix) from None

    return run


@dataclass(frozen=True)
class Leaf:
    """One value of a settings object: ``path`` of field names, flat ``name``, declaration, value and
    ``kind`` (from the declaration, else the type of the field's default)."""

    path: tuple[str, ...]
    name: str
    spec: Setting
    value: Any
    kind: str


def kind_of(spec: Setting, default: Any) -> str:
    """The widget kind of a setting whose class default is ``default``."""
    if spec.kind:
        return spec.kind
    if spec.choices:
        return "COMBO"
    sample = default if default is not None else spec.none_as
    if isinstance(sample, bool):
        return "BOOLEAN"
    if isinstance(sample, int):
        return "INT"
    if isinstance(sample, float):
        return "FLOAT"
    return "STRING"


def _field_kind(f: dataclasses.Field) -> str:
    if f.default is not MISSING:
        default = f.default
    elif f.default_factory is not MISSING:
        default = f.default_factory()
    else:
        default = None
    return kind_of(f.metadata[_SPEC], default)


def leaves(settings: Any) -> list[Leaf]:
    """Every value of a settings class (its defaults) or object, nested ones flattened, in field order."""
    obj = settings() if isinstance(settings, type) else settings
    out = list(_walk(obj, (), ""))
    names = [leaf.name for leaf in out]
    if len(set(names)) != len(names):
        raise TypeError(f"{type(obj).__name__}: flat setting names repeat: {names}")
    return out


def _walk(obj: Any, path: tuple[str, ...], prefix: str, tooltips: Mapping[str, str] | None = None):
    for f in fields(obj):
        value = getattr(obj, f.name)
        if _NESTED in f.metadata:
            yield from _walk(value, path + (f.name,), prefix + f.metadata[_NESTED], f.metadata[_TOOLTIPS])
        elif _SPEC in f.metadata:
            spec = f.metadata[_SPEC]
            if tooltips and f.name in tooltips:
                spec = dataclasses.replace(spec, tooltip=tooltips[f.name])
            yield Leaf(path + (f.name,), prefix + f.name, spec, value, _field_kind(f))
        else:
            raise TypeError(f"{type(obj).__name__}.{f.name} is not declared with setting() or nested()")


def build(settings: Any, values: Mapping[str, Any]) -> Any:
    """``settings`` (a class: its defaults; or an object) with the flat ``values`` (engine values) replaced."""
    obj = settings() if isinstance(settings, type) else settings
    unknown = set(values) - {leaf.name for leaf in leaves(obj)}
    if unknown:
        raise KeyError(f"{type(obj).__name__} has no settings {sorted(unknown)}")
    return _replace(obj, "", values)


def _replace(obj: Any, prefix: str, values: Mapping[str, Any]) -> Any:
    changes = {}
    for f in fields(obj):
        if _NESTED in f.metadata:
            sub = getattr(obj, f.name)
            new = _replace(sub, prefix + f.metadata[_NESTED], values)
            if new is not sub:
                changes[f.name] = new
        elif prefix + f.name in values:
            changes[f.name] = values[prefix + f.name]
    return dataclasses.replace(obj, **changes) if changes else obj


# -- widgets and command-line text ----------------------------------------------------


def to_widget(leaf: Leaf, value: Any = MISSING) -> Any:
    """The widget value showing ``value`` (default: the leaf's own value)."""
    value = leaf.value if value is MISSING else value
    if value is None:
        if leaf.spec.none_as is None:
            raise TypeError(f"setting {leaf.name} is None and declares no none_as for widgets")
        return leaf.spec.none_as
    if leaf.spec.encode is not None:
        return leaf.spec.encode(value)
    if leaf.kind == "FLOAT" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def from_widget(leaf: Leaf, value: Any) -> Any:
    """The engine value of a widget value (or of an already typed command-line value)."""
    s = leaf.spec
    if s.none_as is not None and value == s.none_as and not isinstance(value, bool):
        return None
    if s.decode is not None:
        return s.decode(value)
    kind = leaf.kind
    if kind == "INT" and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind == "FLOAT" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def from_text(leaf: Leaf, text: str, input_name: str | None = None) -> Any:
    """The engine value of a command-line string (typed by the leaf's kind, then :func:`from_widget`)."""
    name = input_name or leaf.name
    kind = leaf.kind
    value: Any = text
    if leaf.spec.none_as is not None and text.strip().lower() == "auto" and kind in ("INT", "FLOAT"):
        return None  # e.g. --steps auto: the model's preset
    if not leaf.spec.cli_text and leaf.spec.decode is None:
        try:
            if kind == "INT":
                value = int(text)
            elif kind == "FLOAT":
                value = float(text)
        except ValueError:
            word = "a whole number" if kind == "INT" else "a number"
            raise InputError(name, text, f"is not {word}", leaf.spec.fix or f"write {to_widget(leaf)!r}") from None
    try:
        return from_widget(leaf, value)
    except InputError as exc:
        raise InputError(name, exc.value, exc.problem, exc.fix) from None


def widget(leaf: Leaf) -> tuple:
    """The ComfyUI input spec of ``leaf``: type (or choice list) and its options, default = the leaf's value."""
    s, kind = leaf.spec, leaf.kind
    opts: dict[str, Any] = {"default": to_widget(leaf)}
    if kind in ("INT", "FLOAT"):
        cast = float if kind == "FLOAT" else int
        lo = s.min if s.none_as is None else min(s.min, s.none_as)
        opts["min"], opts["max"] = cast(lo), cast(s.max)
        if s.step is not None:
            opts["step"] = s.step
    if s.multiline:
        opts["multiline"] = True
    if s.control_after_generate:
        opts["control_after_generate"] = True
    opts["tooltip"] = s.tooltip
    return (list(s.choices) if kind == "COMBO" else kind, opts)


# -- checks -----------------------------------------------------------------------------


def _show(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def check_value(name: str, spec: Setting, kind: str, value: Any) -> None:
    """Check one value against its declaration; raise InputError naming ``name``."""
    fix = spec.fix
    if value is None:
        if spec.optional or spec.none_as is not None:
            return
        raise InputError(name, value, "must be set", fix or "give a value")
    if spec.choices is not None and not spec.open_choices:
        if value not in spec.choices:
            raise InputError(name, value, "is not known", f"choose one of {', '.join(map(str, spec.choices))}")
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        raise InputError(name, value, "must be true or false", fix or "use true or false")
    if spec.validate is not None:
        spec.validate(name, value)
    if kind not in ("INT", "FLOAT") or (isinstance(value, str) and spec.cli_text):
        return
    span = f"{_show(spec.min)} and {_show(spec.max)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and isinstance(value, float)):
        word = "a whole number" if kind == "INT" else "a number"
        raise InputError(name, value, f"must be {word} between {span}", fix or f"use a value between {span}")
    if not (spec.min <= value <= spec.max):  # also refuses NaN
        raise InputError(name, value, f"must be between {span}", fix or f"use a value between {span}")


class Settings:
    """Base of the settings dataclasses: :meth:`check` every value, then :meth:`check_together`."""

    def check(self, prefix: str = ""):
        """Check every value (nested settings too) and the cross-field rules; returns ``self``."""
        for f in fields(self):
            value = getattr(self, f.name)
            if _NESTED in f.metadata:
                value.check(prefix + f.metadata[_NESTED])
            else:
                check_value(prefix + f.name, f.metadata[_SPEC], _field_kind(f), value)
        try:
            self.check_together()
        except InputError as exc:
            if not prefix or exc.input_name.startswith(prefix):
                raise
            raise InputError(prefix + exc.input_name, exc.value, exc.problem, exc.fix) from None
        return self

    def check_together(self) -> None:
        """Rules that tie several values together (override); values are already checked one by one."""
