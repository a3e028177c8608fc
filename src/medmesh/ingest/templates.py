"""Mapping templates: vendor JSON payloads read as readings through JSONPath (RFC 9535).

One JSON file per vendor format says where the readings, their message id, time, value(s) and
unit are, in the spirit of the iomt-fhir (Azure MedTech) JsonPathContent templates. The schema
and examples are in docs/formats.md; deploy/templates/ holds two.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, Self

import orjson
from jsonpath import JSONPathEnvironment, JSONPathError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from medmesh.domain.errors import InvalidReading, MedmeshError, RejectReason, UnitNotConvertible
from medmesh.domain.reading import RawReading, is_valid_message_id
from medmesh.domain.timestamps import TimestampError, parse_rfc3339
from medmesh.domain.units import convert
from medmesh.domain.vocabulary import Measure, measure_by_code, measure_by_key
from medmesh.ingest.formats import Parser
from medmesh.ingest.incoming import Incoming
from medmesh.ingest.native import MAX_MESSAGE_ID_LENGTH, MalformedBody

FORMAT_PREFIX = "template/"

# Strict: RFC 9535 only, no python-jsonpath extensions, so templates stay portable.
_JSONPATH = JSONPathEnvironment(strict=True)

_MEMBER_CHAIN = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class InvalidTemplate(MedmeshError):
    """A mapping template that cannot be used; the message names the file and the field."""


class _Path(Protocol):
    def findall(self, data: Any) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class _MemberPath:
    """`$.a.b`, by far the most common path, walked with dict lookups. python-jsonpath's
    general evaluation costs ~20 µs a query: ~0.2 s of held event loop for a 1000-item batch."""

    names: tuple[str, ...]

    def findall(self, data: Any) -> list[Any]:
        node = data
        for name in self.names:
            if not isinstance(node, dict) or name not in node:
                return []
            node = node[name]
        return [node]


def _compile(text: str) -> _Path:
    if _MEMBER_CHAIN.fullmatch(text):
        return _MemberPath(tuple(text.split(".")[1:]))
    return _JSONPATH.compile(text)


def _check_path(text: str) -> str:
    if not text.startswith("$"):
        raise ValueError("must be a JSONPath expression starting with '$'")
    try:
        _JSONPATH.compile(text)
    except JSONPathError as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"is not a valid RFC 9535 JSONPath expression ({reason})") from None
    return text


JsonPathText = Annotated[str, AfterValidator(_check_path)]


def _measure(type_: str) -> Measure | None:
    return measure_by_key(type_) or measure_by_code(type_)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TypeMatch(_Model):
    """Selects by content: matches when `path` finds a value equal to `equals`, or, without
    `equals`, when it finds anything at all."""

    path: JsonPathText
    equals: str | int | float | bool | None = None


class MeasurementMapping(_Model):
    """One kind of reading an item may hold."""

    type: str = Field(description="A medmesh measure key (heart-rate) or LOINC code")
    value: JsonPathText | None = Field(None, description="Path to the number (single measures)")
    values: dict[str, JsonPathText] | None = Field(
        None, description="Component key -> path, for panels (blood-pressure)"
    )
    unit: str = Field(description="A unit (UCUM or a known spelling), or a path to it ('$…')")
    message_id_suffix: str | None = Field(
        None,
        alias="messageIdSuffix",
        pattern=r"^[A-Za-z0-9._~-]*$",
        description="Appended to the item's message id; default: the type, when a template "
        "has several measurements",
    )
    type_match: TypeMatch | None = Field(None, alias="typeMatch")

    @model_validator(mode="after")
    def _fits_the_vocabulary(self) -> Self:
        measure = _measure(self.type)
        if measure is None:
            raise ValueError("type: not a medmesh measure key or LOINC code (docs/readings.md)")
        if measure.quantity is not None:
            if self.value is None or self.values is not None:
                raise ValueError(f"{measure.key} takes 'value' (one path), not 'values'")
            quantities = [measure.quantity]
        else:
            keys = [c.key for c in measure.components]
            if self.values is None or self.value is not None or set(self.values) != set(keys):
                raise ValueError(
                    f"{measure.key} takes 'values' with exactly the keys {', '.join(keys)}"
                )
            quantities = list(measure.components)
        if self.unit.startswith("$"):
            _check_path(self.unit)
        else:
            for quantity in quantities:
                try:
                    convert(1.0, self.unit, quantity.unit)
                except UnitNotConvertible:
                    raise ValueError(
                        f"unit: {self.unit!r} cannot be converted to {quantity.unit!r}"
                    ) from None
        return self


class MappingTemplate(_Model):
    """A vendor payload format, registered as the format `template/<name>`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    description: str | None = None
    type_match: TypeMatch | None = Field(
        None, alias="typeMatch", description="The body must match, else it is refused whole"
    )
    items: JsonPathText | None = Field(
        None, description="Where the readings are; default: the body (each element of an array)"
    )
    device_id: JsonPathText | None = Field(
        None, alias="deviceId", description="Path in the body; if found, must be the sender"
    )
    message_id: JsonPathText = Field(alias="messageId", description="Path in each item")
    time: JsonPathText = Field(description="Path in each item")
    time_format: Literal["iso8601", "epoch-seconds", "epoch-millis"] = Field(
        "iso8601", alias="timeFormat"
    )
    measurements: list[MeasurementMapping] = Field(min_length=1)

    @model_validator(mode="after")
    def _message_ids_stay_unique(self) -> Self:
        suffixes = [_suffix(self, m) for m in self.measurements]
        if len(set(suffixes)) != len(suffixes):
            raise ValueError(
                "measurements: give each measurement a different messageIdSuffix, so that the "
                "readings of one item get different message ids"
            )
        return self

    @property
    def format_name(self) -> str:
        return FORMAT_PREFIX + self.name


def _suffix(template: MappingTemplate, measurement: MeasurementMapping) -> str:
    if measurement.message_id_suffix is not None:
        return measurement.message_id_suffix
    return measurement.type if len(template.measurements) > 1 else ""


def _describe(error: ValidationError) -> str:
    problems = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(template)"
        message = str(problem["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "; ".join(problems)


def load_template(path: Path) -> MappingTemplate:
    """Read and check one template file; InvalidTemplate names the file and what is wrong."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise InvalidTemplate(f"{path}: cannot be read ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise InvalidTemplate(f"{path}: not valid JSON ({exc})") from None
    try:
        return MappingTemplate.model_validate(document)
    except ValidationError as exc:
        raise InvalidTemplate(f"{path}: {_describe(exc)}") from None


def load_templates(directory: Path) -> list[MappingTemplate]:
    """Every `*.json` template in `directory`, in file name order.

    Any bad file raises InvalidTemplate: a deployment that lost a vendor format at start-up
    would dead-letter that vendor's readings until someone noticed.
    """
    if not directory.is_dir():
        raise InvalidTemplate(f"{directory}: is not a directory of mapping templates")
    templates: list[MappingTemplate] = []
    files: dict[str, Path] = {}
    for path in sorted(directory.glob("*.json")):
        template = load_template(path)
        if template.name in files:
            raise InvalidTemplate(
                f"{path}: name {template.name!r} is already used by {files[template.name]}"
            )
        files[template.name] = path
        templates.append(template)
    return templates


def _malformed(message: str) -> InvalidReading:
    return InvalidReading(RejectReason.MALFORMED, message)


def _same(found: object, wanted: object) -> bool:
    """JSON equality: true is not 1."""
    if isinstance(found, bool) or isinstance(wanted, bool):
        return found is wanted
    return found == wanted


@dataclass(frozen=True, slots=True)
class _Match:
    path: _Path
    equals: str | int | float | bool | None

    @classmethod
    def of(cls, match: TypeMatch | None) -> _Match | None:
        return None if match is None else cls(_compile(match.path), match.equals)

    def matches(self, node: dict[str, Any] | list[Any]) -> bool:
        found = self.path.findall(node)
        if self.equals is None:
            return bool(found)
        return any(_same(value, self.equals) for value in found)


@dataclass(frozen=True, slots=True)
class _Field:
    """A template path and the name it is reported under when what it finds is wrong."""

    name: str
    text: str
    path: _Path

    @classmethod
    def of(cls, name: str, text: str) -> _Field:
        return cls(name, text, _compile(text))

    def find(self, item: dict[str, Any]) -> Any:
        """The one value the path finds, or None when it finds nothing (or JSON null)."""
        found = self.path.findall(item)
        if len(found) > 1:
            raise _malformed(
                f"field '{self.name}' (template path {self.text}) found several values"
            )
        return found[0] if found else None

    def number(self, item: dict[str, Any]) -> float | None:
        value = self.find(item)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _malformed(f"field '{self.name}' (template path {self.text}) must be a number")
        return value


@dataclass(frozen=True, slots=True)
class _Measurement:
    type: str
    value: _Field | None
    values: tuple[_Field, ...]
    unit: str | _Field
    suffix: str
    match: _Match | None

    @classmethod
    def of(cls, template: MappingTemplate, m: MeasurementMapping) -> _Measurement:
        return cls(
            type=m.type,
            value=_Field.of("value", m.value) if m.value is not None else None,
            values=tuple(_Field.of(key, path) for key, path in (m.values or {}).items()),
            unit=_Field.of("unit", m.unit) if m.unit.startswith("$") else m.unit,
            suffix=_suffix(template, m),
            match=_Match.of(m.type_match),
        )

    def _value(self, item: dict[str, Any]) -> float | dict[str, float] | None:
        if self.value is not None:
            return self.value.number(item)
        found = {f.name: f.number(item) for f in self.values}
        if all(v is None for v in found.values()):
            return None
        parts: dict[str, float] = {}
        for part in self.values:
            number = found[part.name]
            if number is None:
                raise _malformed(f"field '{part.name}' (template path {part.text}) found nothing")
            parts[part.name] = number
        return parts

    def _unit(self, item: dict[str, Any]) -> str:
        if isinstance(self.unit, str):
            return self.unit
        unit = self.unit.find(item)
        if not isinstance(unit, str) or not unit.strip():
            raise _malformed(f"field 'unit' (template path {self.unit.text}) must be a string")
        return unit

    def read(self, item: dict[str, Any], message_id: str, effective: datetime) -> RawReading | None:
        """The reading this measurement finds in `item`, or None when its value is absent."""
        value = self._value(item)
        if value is None:
            return None
        return RawReading(message_id, self.type, effective, value, self._unit(item))


class TemplateParser:
    """A Formats parser for one template: (body, device id) -> one Incoming per reading."""

    def __init__(self, template: MappingTemplate, max_readings: int) -> None:
        self.template = template
        self._max_readings = max_readings
        self._match = _Match.of(template.type_match)
        self._items = _compile(template.items) if template.items is not None else None
        self._device_id = _compile(template.device_id) if template.device_id else None
        self._message_id = _Field.of("messageId", template.message_id)
        self._time = _Field.of("time", template.time)
        self._measurements = [_Measurement.of(template, m) for m in template.measurements]

    def __call__(self, body: bytes, device_id: str) -> list[Incoming]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise MalformedBody("the body is not valid JSON") from None
        if not isinstance(document, dict | list):
            raise MalformedBody("the body must be a JSON object or array")
        if self._match is not None and not self._match.matches(document):
            raise MalformedBody(f"the body is not a {self.template.name} document (typeMatch)")
        self._check_device(document, device_id)
        items = self._select_items(document)
        if len(items) > self._max_readings:
            raise MalformedBody(f"a batch holds at most {self._max_readings} readings")
        incoming = [one for item in items for one in self._item(item)]
        if len(incoming) > self._max_readings:
            raise MalformedBody(f"a batch holds at most {self._max_readings} readings")
        return incoming

    def _check_device(self, document: dict[str, Any] | list[Any], device_id: str) -> None:
        if self._device_id is None:
            return
        for claimed in self._device_id.findall(document):
            if claimed is not None and (isinstance(claimed, bool) or str(claimed) != device_id):
                raise InvalidReading(
                    RejectReason.DEVICE_MISMATCH,
                    "the body names a different device than the sender",
                )

    def _select_items(self, document: dict[str, Any] | list[Any]) -> list[Any]:
        """The nodes `items` selects; a single array selected is its elements."""
        if self._items is None:
            found: list[Any] = [document]
        else:
            found = self._items.findall(document)
            if not found:
                raise MalformedBody(f"the body has nothing at {self.template.items}")
        if len(found) == 1 and isinstance(found[0], list):
            return list(found[0])
        return found

    def _base_id(self, item: dict[str, Any]) -> str:
        value = self._message_id.find(item)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise _malformed(
            f"field 'messageId' (template path {self._message_id.text}) must be a string or "
            "an integer"
        )

    def _effective(self, item: dict[str, Any]) -> datetime:
        value = self._time.find(item)
        where = f"field 'time' (template path {self._time.text})"
        if self.template.time_format == "iso8601":
            if not isinstance(value, str):
                raise _malformed(f"{where} must be an RFC 3339 date-time")
            try:
                return parse_rfc3339(value)
            except TimestampError as exc:
                if exc.problem == "offset":
                    raise _malformed(f"{where} must carry a UTC offset, e.g. 'Z'") from None
                raise _malformed(f"{where} must be an RFC 3339 date-time") from None
        if isinstance(value, str):  # some vendors quote their epoch numbers
            with contextlib.suppress(ValueError):
                value = float(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _malformed(f"{where} must be a number ({self.template.time_format})")
        seconds = value / 1000 if self.template.time_format == "epoch-millis" else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise _malformed(f"{where} is out of range") from None

    def _item(self, item: Any) -> list[Incoming]:
        payload = orjson.dumps(item).decode()
        base_id: str | None = None
        try:
            if not isinstance(item, dict):
                raise _malformed("each item must be a JSON object")
            base_id = self._base_id(item)
            if not is_valid_message_id(base_id):
                base_id = None
                raise _malformed(
                    f"field 'messageId' must be 1 to {MAX_MESSAGE_ID_LENGTH} printable characters"
                )
            effective = self._effective(item)
        except InvalidReading as exc:
            return [Incoming(payload, base_id, error=exc)]
        incoming: list[Incoming] = []
        for measurement in self._measurements:
            if measurement.match is not None and not measurement.match.matches(item):
                continue
            message_id = f"{base_id}-{measurement.suffix}" if measurement.suffix else base_id
            try:
                if len(message_id) > MAX_MESSAGE_ID_LENGTH:
                    raise _malformed(
                        f"field 'messageId' with its suffix is longer than "
                        f"{MAX_MESSAGE_ID_LENGTH} characters"
                    )
                reading = measurement.read(item, message_id, effective)
            except InvalidReading as exc:
                incoming.append(Incoming(payload, message_id, error=exc))
                continue
            if reading is not None:
                incoming.append(Incoming(payload, message_id, reading=reading))
        if not incoming:
            error = _malformed("the item holds none of the template's measurements")
            return [Incoming(payload, base_id, error=error)]
        return incoming


def parser_for(template: MappingTemplate, max_readings: int) -> Parser:
    """The Formats parser for `template` (its paths compiled once, here)."""
    return TemplateParser(template, max_readings)
