"""The release policy: data files in ``policies/`` that compliance people read and review.

Every ``*.yaml`` file in the policy directory contributes ``fields``, ``purposes``, ``channels`` and
``traits`` (what quizzes may derive about a shopper);
a key defined twice, a key missing from the fideslang taxonomy, or a reference to something not
declared stops loading with an error naming the file, the key and the problem. Channels may name
per-field ``transforms`` (from a closed set, :mod:`tillit.transforms`) and a ``rate_limit``. One file may also
name the data ``controller`` that consent receipts identify (GDPR Art. 4(7), Kantara ``piiControllers``).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

import msgspec
import yaml
from email_validator import EmailNotValidError, validate_email

from tillit.patterns import exact
from tillit.transforms import TRANSFORMS

__all__ = [
    "LANGUAGES",
    "Channel",
    "ConsentDuration",
    "Controller",
    "Field",
    "Language",
    "LegalBasis",
    "Notice",
    "NoticeText",
    "Policy",
    "PolicyError",
    "PostalAddress",
    "Purpose",
    "RateLimit",
    "Trait",
    "TraitType",
    "TraitValue",
    "load_policy",
]

LegalBasis = Literal["consent", "contract", "legitimate_interest", "legal_obligation"]
_NAME = exact(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?$")
_RATE = re.compile(r"^\s*([1-9][0-9]{0,8})\s*/\s*([1-9][0-9]{0,5})?\s*(s|min|h)\s*$")
_RATE_UNITS: Final = {"s": 1, "min": 60, "h": 3600}


class PolicyError(Exception):
    """The policy cannot be loaded; the message names the file, the key and the problem."""

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file = str(file)
        self.key = key
        self.problem = problem


class ConsentDuration(msgspec.Struct, frozen=True):
    """An ISO 8601 duration in whole years, months and days (``P24M``, ``P1Y6M``, ``P30D``)."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> ConsentDuration:
        match = _DURATION.fullmatch(text)
        if not match or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration like P24M, P1Y or P30D")
        years, months, days = (int(group or 0) for group in match.groups())
        return cls(years, months, days)

    def after(self, start: datetime) -> datetime:
        """The moment this duration has passed since ``start`` (calendar months, clamped to month end)."""
        total_months = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + total_months // 12, total_months % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)


class RateLimit(msgspec.Struct, frozen=True):
    """At most ``requests`` in any ``per_seconds``, written ``50/s``, ``600/min``, ``100/10s`` or ``3000/h``."""

    requests: int
    per_seconds: int

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.fullmatch(text)
        if not match:
            raise ValueError(f"{text!r} is not a rate limit like 50/s, 600/min, 100/10s or 3000/h")
        requests, count, unit = match.groups()
        return cls(int(requests), int(count or 1) * _RATE_UNITS[unit])

    @property
    def per_second(self) -> float:
        return self.requests / self.per_seconds


class Field(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    category: str
    description: str = ""


class Purpose(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: str
    legal_basis: LegalBasis
    may_use: list[str]
    consent_lasts: str | None = None
    description: str = ""
    double_opt_in: bool = False
    """Consent counts only once the shopper confirms it from a link (e-mail marketing)."""
    sale_or_sharing: bool = False
    """Selling or sharing data: a Global Privacy Control signal (``Sec-GPC: 1``) refuses it."""

    @property
    def consent_duration(self) -> ConsentDuration | None:
        return ConsentDuration.parse(self.consent_lasts) if self.consent_lasts else None


class Channel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which purposes a channel may ask for, how its released fields are transformed, how often it may ask.

    ``transforms`` maps a field (or trait) to a name in :data:`tillit.transforms.TRANSFORMS`; the
    channel receives the transformed value under the field's name. ``rate_limit`` bounds each of the
    channel's OAuth clients (see :class:`RateLimit`).
    """

    purposes: list[str]
    description: str = ""
    transforms: dict[str, str] = {}
    rate_limit: str | None = None

    @property
    def rate(self) -> RateLimit | None:
        return _rate_limit(self.rate_limit) if self.rate_limit is not None else None


TraitType = Literal["enum", "list", "number", "text"]
TraitValue = str | int | float | list[str]
ValueName = Annotated[str, msgspec.Meta(pattern=_NAME)]


class Trait(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A profile trait that quizzes may derive, e.g. ``style`` or ``price_sensitivity``.

    ``enum`` holds one of ``values``, ``list`` several of them (each once); ``number`` lies in
    ``min``..``max``; ``text`` is at most ``max_length`` characters. The order of ``values`` breaks
    ties between equal quiz scores.
    """

    type: TraitType
    category: str
    description: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    values: list[ValueName] = []
    min: int | float | None = None
    max: int | float | None = None
    max_length: Annotated[int, msgspec.Meta(ge=1, le=2000)] | None = None

    def problem_with(self, value: object) -> str | None:
        """Why ``value`` is not a value of this trait, or ``None`` when it is."""
        if self.type == "enum":
            if not isinstance(value, str) or value not in self.values:
                return f"{value!r} is not one of {', '.join(self.values)}"
        elif self.type == "list":
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                return f"{value!r} is not a list of values"
            unknown = [item for item in value if item not in self.values]
            if unknown:
                return f"{', '.join(map(repr, unknown))} not among {', '.join(self.values)}"
            if len(set(value)) != len(value):
                return f"{value!r} names a value twice"
        elif self.type == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"{value!r} is not a number"
            if not (self.min is not None and self.max is not None and self.min <= value <= self.max):
                return f"{value!r} is not between {self.min} and {self.max}"
        elif not isinstance(value, str) or not value.strip():
            return f"{value!r} is not a non-empty text"
        elif len(value) > (self.max_length or 0):
            return f"text longer than {self.max_length} characters"
        return None


FieldName = Annotated[str, msgspec.Meta(pattern=_NAME)]
ChannelName = Annotated[str, msgspec.Meta(pattern=_NAME)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_JURISDICTION = re.compile(r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$")
_PHONE = re.compile(r"^\+[1-9][0-9 -]{4,22}[0-9]$")


class PostalAddress(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A postal address; ``country`` is an ISO 3166-1 alpha-2 code."""

    street: Text
    locality: Text
    postal_code: Annotated[str, msgspec.Meta(min_length=1, max_length=20)]
    country: Text
    region: Text | None = None


class Controller(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The data controller that consent receipts name; ``jurisdiction`` is ISO 3166 (``SE``, ``US-CA``).

    ``phone`` is in international form (``+46 8 ...``) so that it works from wherever the receipt is read.
    """

    name: Text
    contact: Text
    email: Text
    phone: Text
    address: PostalAddress
    jurisdiction: Text
    privacy_policy_url: Text
    url: Text | None = None


LANGUAGES: Final = ("en", "sv", "nb", "et")
Language = Literal["en", "sv", "nb", "et"]


class NoticeText(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    title: Text
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]


class Notice(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One version of the notice shown when a purpose's consent is asked for, in every language.

    A *material* version changes what the shopper agrees to: from its effective date, consents
    given under older versions stop counting until the shopper consents again.
    """

    version: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
    effective: datetime
    texts: dict[Language, NoticeText]
    material: bool = False

    def text_in(self, language: str) -> NoticeText:
        return self.texts.get(language, self.texts["en"])  # type: ignore[call-overload]


class PolicyFile(msgspec.Struct, forbid_unknown_fields=True):
    fields: dict[FieldName, Field] = {}
    purposes: dict[str, Purpose] = {}
    channels: dict[ChannelName, Channel] = {}
    controller: Controller | None = None
    notices: dict[str, list[Notice]] = {}
    traits: dict[ValueName, Trait] = {}


class Policy(msgspec.Struct, frozen=True):
    """The whole validated policy."""

    fields: dict[str, Field]
    purposes: dict[str, Purpose]
    channels: dict[str, Channel]
    sources: tuple[str, ...]
    loaded_at: datetime
    controller: Controller | None = None
    notices: dict[str, list[Notice]] = {}
    traits: dict[str, Trait] = {}
    origins: dict[str, str] = {}
    """Which file defined each key (``channels.ads`` -> ``.../release.yaml``), for explanations."""

    def expires_at(self, purpose: str, given_at: datetime) -> datetime | None:
        duration = self.purposes[purpose].consent_duration
        return duration.after(given_at) if duration else None

    def notice(self, purpose: str, version: int) -> Notice | None:
        versions = self.notices.get(purpose, [])
        return versions[version - 1] if 0 < version <= len(versions) else None

    def current_notice(self, purpose: str, now: datetime) -> Notice | None:
        """The newest version in effect at ``now`` (versions are ordered, effective dates too)."""
        in_effect = [notice for notice in self.notices.get(purpose, []) if notice.effective <= now]
        return in_effect[-1] if in_effect else None

    def reconsent_floor(self, purpose: str, now: datetime) -> int:
        """The oldest notice version whose consents still count at ``now``."""
        material = [n.version for n in self.notices.get(purpose, []) if n.material and n.effective <= now]
        return max(material, default=1)


@cache
def _rate_limit(text: str) -> RateLimit:
    return RateLimit.parse(text)


@cache
def _taxonomy() -> tuple[frozenset[str], frozenset[str]]:
    from fideslang.default_taxonomy import DEFAULT_TAXONOMY

    categories = frozenset(item.fides_key for item in DEFAULT_TAXONOMY.data_category)
    uses = frozenset(item.fides_key for item in DEFAULT_TAXONOMY.data_use)
    return categories, uses


def _read(path: Path) -> PolicyFile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PolicyError(path, "(file)", f"not valid YAML: {exc}") from exc
    if raw is None:
        return PolicyFile()
    try:
        return msgspec.convert(raw, type=PolicyFile)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = message.rsplit(" - at `", 1)
        key = where[1].rstrip("`") if len(where) == 2 else "(file)"
        if key.startswith("key` in `"):
            key = f"{key.removeprefix('key` in `')} (a key)"
        raise PolicyError(path, key, where[0]) from exc


def load_policy(policy_dir: Path) -> Policy:
    """Read and validate every ``*.yaml`` in ``policy_dir``."""
    files = sorted(policy_dir.glob("*.yaml"))
    if not files:
        raise PolicyError(policy_dir, "(directory)", "no *.yaml policy files found")
    fields: dict[str, Field] = {}
    purposes: dict[str, Purpose] = {}
    channels: dict[str, Channel] = {}
    traits: dict[str, Trait] = {}
    origin: dict[str, Path] = {}
    controller: Controller | None = None
    notices: dict[str, list[Notice]] = {}
    for path in files:
        part = _read(path)
        for purpose_name, versions in part.notices.items():
            key = f"notices.{purpose_name}"
            if key in origin:
                raise PolicyError(path, key, f"already defined in {origin[key]}")
            origin[key] = path
            notices[purpose_name] = versions
        if part.controller is not None:
            if "controller" in origin:
                raise PolicyError(path, "controller", f"already defined in {origin['controller']}")
            origin["controller"] = path
            _validate_controller(part.controller, path)
            controller = part.controller
        for section, target, entries in (
            ("fields", fields, part.fields),
            ("purposes", purposes, part.purposes),
            ("channels", channels, part.channels),
            ("traits", traits, part.traits),
        ):
            for name, value in entries.items():
                key = f"{section}.{name}"
                if key in origin:
                    raise PolicyError(path, key, f"already defined in {origin[key]}")
                origin[key] = path
                target[name] = value  # type: ignore[index]
    _validate(fields, purposes, channels, traits, origin)
    _validate_notices(notices, purposes, origin)
    _validate_traits(traits, fields, origin)
    return Policy(
        fields=fields,
        purposes=purposes,
        channels=channels,
        sources=tuple(str(path) for path in files),
        loaded_at=datetime.now(UTC),
        controller=controller,
        notices=notices,
        traits=traits,
        origins={key: str(path) for key, path in origin.items()},
    )


def _validate_traits(traits: dict[str, Trait], fields: dict[str, Field], origin: dict[str, Path]) -> None:
    categories, _ = _taxonomy()
    for name, trait in traits.items():
        where, key = origin[f"traits.{name}"], f"traits.{name}"
        if name in fields:
            raise PolicyError(where, key, f"{name!r} is already a profile field (fields.{name})")
        if trait.category not in categories:
            raise PolicyError(where, f"{key}.category", f"{trait.category!r} is not a fideslang data category")
        given = {
            option
            for option, value in (("values", trait.values), ("min", trait.min), ("max", trait.max))
            if value not in (None, [])
        } | ({"max_length"} if trait.max_length is not None else set())
        needs = {"enum": {"values"}, "list": {"values"}, "number": {"min", "max"}, "text": {"max_length"}}[trait.type]
        for option in sorted(needs - given):
            raise PolicyError(where, f"{key}.{option}", f"a {trait.type} trait needs {option}")
        for option in sorted(given - needs):
            raise PolicyError(where, f"{key}.{option}", f"a {trait.type} trait takes no {option}")
        if len(set(trait.values)) != len(trait.values):
            raise PolicyError(where, f"{key}.values", "a value is listed twice")
        if trait.type == "number" and trait.min is not None and trait.max is not None and trait.min >= trait.max:
            raise PolicyError(where, f"{key}.min", f"min {trait.min} is not below max {trait.max}")


def _validate_notices(notices: dict[str, list[Notice]], purposes: dict[str, Purpose], origin: dict[str, Path]) -> None:
    for name, versions in notices.items():
        where, key = origin[f"notices.{name}"], f"notices.{name}"
        if name not in purposes:
            raise PolicyError(where, key, f"{name!r} is not a purpose declared in the policy")
        for index, notice in enumerate(versions):
            if notice.version != index + 1:
                problem = f"expected version {index + 1}, found {notice.version}"
                raise PolicyError(where, f"{key}[{index}].version", problem)
            if notice.effective.tzinfo is None:
                raise PolicyError(where, f"{key}[{index}].effective", "give the time zone, e.g. 2026-01-01T00:00:00Z")
            if index and notice.effective < versions[index - 1].effective:
                raise PolicyError(where, f"{key}[{index}].effective", "takes effect before the version it replaces")
            missing = [language for language in LANGUAGES if language not in notice.texts]
            if missing:
                raise PolicyError(where, f"{key}[{index}].texts", f"no text in {', '.join(missing)}")
    for name, purpose in purposes.items():
        if purpose.legal_basis == "consent" and not notices.get(name):
            raise PolicyError(
                origin[f"purposes.{name}"], f"purposes.{name}", "a purpose based on consent needs a notice (notices:)"
            )


def _validate_controller(controller: Controller, path: Path) -> None:
    for key, value, pattern, expected in (
        ("jurisdiction", controller.jurisdiction, _JURISDICTION, "an ISO 3166 code such as SE or US-CA"),
        ("address.country", controller.address.country, _COUNTRY, "an ISO 3166-1 alpha-2 code such as SE"),
        ("phone", controller.phone, _PHONE, "a number in international form such as +46 8 123 456 78"),
    ):
        if not pattern.fullmatch(value):
            raise PolicyError(path, f"controller.{key}", f"{value!r} is not {expected}")
    try:
        validate_email(controller.email, check_deliverability=False)
    except EmailNotValidError as exc:
        raise PolicyError(path, "controller.email", f"{controller.email!r} is not an e-mail address: {exc}") from exc
    for key, url in (("privacy_policy_url", controller.privacy_policy_url), ("url", controller.url)):
        if url is None:
            continue
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise PolicyError(path, f"controller.{key}", f"{url!r} is not an absolute http(s) URL")


def _validate(
    fields: dict[str, Field],
    purposes: dict[str, Purpose],
    channels: dict[str, Channel],
    traits: dict[str, Trait],
    origin: dict[str, Path],
) -> None:
    categories, uses = _taxonomy()
    for name, field in fields.items():
        if field.category not in categories:
            raise PolicyError(
                origin[f"fields.{name}"],
                f"fields.{name}.category",
                f"{field.category!r} is not a fideslang data category",
            )
    for name, purpose in purposes.items():
        where = origin[f"purposes.{name}"]
        if name not in uses:
            raise PolicyError(where, f"purposes.{name}", f"{name!r} is not a fideslang data use")
        for category in purpose.may_use:
            if category not in categories:
                raise PolicyError(where, f"purposes.{name}.may_use", f"{category!r} is not a fideslang data category")
        if purpose.consent_lasts is not None:
            try:
                ConsentDuration.parse(purpose.consent_lasts)
            except ValueError as exc:
                raise PolicyError(where, f"purposes.{name}.consent_lasts", str(exc)) from exc
        if purpose.legal_basis == "consent" and purpose.consent_lasts is None:
            raise PolicyError(where, f"purposes.{name}.consent_lasts", "a purpose based on consent needs consent_lasts")
    for name, channel in channels.items():
        for purpose_name in channel.purposes:
            if purpose_name not in purposes:
                raise PolicyError(
                    origin[f"channels.{name}"],
                    f"channels.{name}.purposes",
                    f"{purpose_name!r} is not a purpose declared in the policy",
                )
        _validate_channel_extras(name, channel, fields, traits, origin[f"channels.{name}"])


def _validate_channel_extras(
    name: str, channel: Channel, fields: dict[str, Field], traits: dict[str, Trait], where: Path
) -> None:
    for field_name, transform in channel.transforms.items():
        key = f"channels.{name}.transforms.{field_name}"
        if field_name not in fields and field_name not in traits:
            raise PolicyError(where, key, f"{field_name!r} is not a field or trait declared in the policy")
        if transform not in TRANSFORMS:
            raise PolicyError(
                where, key, f"unknown transform {transform!r}; known transforms: {', '.join(sorted(TRANSFORMS))}"
            )
    if channel.rate_limit is not None:
        try:
            RateLimit.parse(channel.rate_limit)
        except ValueError as exc:
            raise PolicyError(where, f"channels.{name}.rate_limit", str(exc)) from exc
