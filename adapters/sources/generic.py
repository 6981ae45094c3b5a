"""Generic JSON: any other tool, its Alert fields picked out by JMESPath or sandboxed Jinja in the options.

A team onboards a tool by writing options, not code (docs/sources.md has the full reference):

    kind: generic
    options:
      alerts: "checks[?state != 'paused']"   # JMESPath to a list: one alert per element
      identity: "id"                          # a plain string is JMESPath over the element
      name: "check_name"
      status: "state"
      status_map: {down: firing, up: resolved}
      summary: {template: "{{ alert.check_name }} is {{ alert.state }} ({{ payload.account }})"}
      labels: {team: "owner.team"}

JMESPath: https://jmespath.org/specification.html. Templates see `alert` (the element) and `payload`
(the whole body) and run in jinja2.sandbox.ImmutableSandboxedEnvironment, so a mapping cannot reach
Python internals or mutate the payload. A bad element becomes a dead letter; the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Annotated, Any, TypeVar

import jinja2
import jmespath
import orjson
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jmespath.exceptions import JMESPathError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from adapters.sources import lenient
from bridge.core.errors import PayloadError
from bridge.core.models import Alert, Severity, Status, in_range, stable_hash
from bridge.core.source import ParseContext, Parsed, Rejected, SourceAdapter

MAX_ALERTS = 1_000  # per request; a bigger batch should be split by the sender

Getter = Callable[[Any, Any], Any]  # (element, payload) -> value


@cache
def _environment() -> ImmutableSandboxedEnvironment:
    # ChainableUndefined: `{{ alert.a.b }}` is '' when `a` is missing, as ops templates expect.
    return ImmutableSandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)


def _valid_jmespath(expression: str) -> str:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"not a valid JMESPath expression: {exc}") from exc
    return expression


JMESPath = Annotated[str, AfterValidator(_valid_jmespath)]


class Template(BaseModel):
    """`{template: "..."}`: a Jinja template with `alert` and `payload` in scope."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str

    @field_validator("template")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            _environment().from_string(value)
        except jinja2.TemplateSyntaxError as exc:
            raise ValueError(f"template does not compile: {exc.message} (line {exc.lineno})") from exc
        return value


Extract = JMESPath | Template


class GenericOptions(BaseModel):
    """Where each Alert field comes from in a tool's JSON (validated at start-up by the config loader)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alerts: JMESPath | None = None  # a list in the body, one alert per element; None: the body is one alert
    name: Extract
    identity: Extract | None = None  # None: a hash of name, resource and labels
    resource: Extract | None = None
    severity: Extract | None = None
    status: Extract | None = None  # None: every alert is firing
    summary: Extract | None = None
    description: Extract | None = None
    starts_at: Extract | None = None  # ISO 8601, or Unix seconds / milliseconds
    ends_at: Extract | None = None
    labels: JMESPath | dict[str, Extract] | None = None  # an expression giving an object, or name → extract
    annotations: JMESPath | dict[str, Extract] | None = None
    links: list[Extract] = Field(default_factory=list)
    raw: dict[str, Extract] = Field(default_factory=dict)  # vendor fields for ticket templates: keep it small
    severity_map: dict[str, Severity] = Field(default_factory=dict)  # tool's value → severity
    status_map: dict[str, Status] = Field(default_factory=dict)  # tool's value → firing/resolved/acknowledged
    default_severity: Severity = Severity.WARNING

    @field_validator("severity_map", "status_map")
    @classmethod
    def _lower_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {key.strip().lower(): mapped for key, mapped in value.items()}


class _Bad(Exception):
    """One element cannot become an Alert: it is dead-lettered with this reason."""


@dataclass(frozen=True, slots=True)
class _Plan:
    options: GenericOptions
    alerts: Getter | None
    fields: Mapping[str, Getter]
    labels: Getter | Mapping[str, Getter] | None
    annotations: Getter | Mapping[str, Getter] | None
    links: list[Getter]
    raw: Mapping[str, Getter]


def _getter(spec: str | Template) -> Getter:
    if isinstance(spec, Template):
        template = _environment().from_string(spec.template)
        return lambda element, payload: template.render(alert=element, payload=payload)
    compiled = jmespath.compile(spec)
    return lambda element, payload: compiled.search(element)


@lru_cache(maxsize=64)
def _cached_plan(options_json: bytes) -> _Plan:
    """Options compiled once per distinct mapping (keyed by its canonical JSON): no compile per request."""
    return _compile(GenericOptions.model_validate(orjson.loads(options_json)))


def _compile(opts: GenericOptions) -> _Plan:
    singles = (
        "name",
        "identity",
        "resource",
        "severity",
        "status",
        "summary",
        "description",
        "starts_at",
        "ends_at",
    )
    fields = {name: _getter(getattr(opts, name)) for name in singles if getattr(opts, name) is not None}

    def group(spec: str | dict[str, Any] | None) -> Getter | Mapping[str, Getter] | None:
        if spec is None or isinstance(spec, str):
            return None if spec is None else _getter(spec)
        return {key: _getter(value) for key, value in spec.items()}

    return _Plan(
        options=opts,
        alerts=_getter(opts.alerts) if opts.alerts else None,
        fields=fields,
        labels=group(opts.labels),
        annotations=group(opts.annotations),
        links=[_getter(spec) for spec in opts.links],
        raw={key: _getter(spec) for key, spec in opts.raw.items()},
    )


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    opts = lenient.options(GenericOptions, ctx.options, ctx.source)  # a ConfigError names the bad option
    try:
        plan = _cached_plan(orjson.dumps(dict(ctx.options), option=orjson.OPT_SORT_KEYS))
    except TypeError:  # options that are not plain JSON (cannot happen from YAML): compile uncached
        plan = _compile(opts)
    doc = lenient.load_json(body)
    elements = [doc]
    if plan.alerts is not None:
        try:
            found = plan.alerts(doc, doc)
        except Exception as exc:  # the operator's expression on the sender's data, as in _run
            raise PayloadError(f"alerts: {plan.options.alerts!r} failed on this body: {exc}") from exc
        if not isinstance(found, list):
            what = "nothing" if found is None else f"a {type(found).__name__}"
            raise PayloadError(f"alerts: {plan.options.alerts!r} found {what} in the body, not a list")
        elements = found
    if len(elements) > MAX_ALERTS:
        raise PayloadError(f"{len(elements)} alerts in one body, more than {MAX_ALERTS}: split the batch")
    out = Parsed()
    for index, element in enumerate(elements):
        try:
            out.alerts.append(_alert(plan, element, doc, ctx))
        except _Bad as exc:
            out.rejected.append(Rejected(f"alerts[{index}]: {exc}", element))
        except ValidationError as exc:  # what the Alert model refuses (a time out of range)
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            out.rejected.append(Rejected(f"alerts[{index}].{where}: {first['msg']}", element))
    return out


def _alert(plan: _Plan, element: Any, doc: Any, ctx: ParseContext) -> Alert:
    opts = plan.options

    def value(field: str) -> Any:
        getter = plan.fields.get(field)
        return None if getter is None else _run(getter, element, doc, field)

    def text(field: str) -> str:
        return _text(value(field), field)

    name = text("name")
    if not name:
        raise _Bad("name: the expression gave nothing")
    resource = text("resource")
    labels = _group(plan.labels, element, doc, "labels")
    identity = text("identity") if "identity" in plan.fields else ""
    if "identity" in plan.fields and not identity:
        raise _Bad("identity: the expression gave nothing")
    said_severity = text("severity").lower()
    severity = opts.severity_map.get(said_severity) or _enum(Severity, said_severity) or opts.default_severity
    said_status = text("status").lower()
    status = opts.status_map.get(said_status) or _enum(Status, said_status)
    if status is None:
        if said_status:
            raise _Bad(f"status: {said_status[:40]!r} is not firing/resolved/acknowledged; add it to status_map")
        status = Status.FIRING
    links: list[str] = []
    for index, getter in enumerate(plan.links):
        found = _run(getter, element, doc, f"links[{index}]")
        links.extend(_text(item, f"links[{index}]") for item in (found if isinstance(found, list) else [found]))
    raw = {key: _run(getter, element, doc, f"raw.{key}") for key, getter in plan.raw.items()}
    problem = lenient.shape_problem(raw, "raw") if raw else None
    if problem:  # kept with the alert in Redis: bounded like the payload it came from
        raise _Bad(problem)
    return Alert(
        source=ctx.source,
        kind="generic",
        identity=identity or stable_hash({"name": name, "resource": resource, "labels": labels}),
        name=name,
        resource=resource,
        severity=severity,
        status=status,
        summary=text("summary") or name,
        description=text("description"),
        labels=labels,
        annotations=_group(plan.annotations, element, doc, "annotations"),
        starts_at=_time(value("starts_at"), "starts_at"),
        ends_at=_time(value("ends_at"), "ends_at"),
        links=[link for link in links if link],
        received_at=ctx.received_at,
        raw={key: item for key, item in raw.items() if item not in (None, "")},
    )


def _run(getter: Getter, element: Any, doc: Any, field: str) -> Any:
    """One extraction. The expression is the operator's and the data the sender's, so anything it
    raises (a JMESPath type error, a sandbox refusal, a template's own error) is this element's
    problem and becomes its dead letter; nothing escapes as a 500."""
    try:
        result = getter(element, doc)
    except Exception as exc:
        raise _Bad(f"{field}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if isinstance(result, str) and len(result) > lenient.MAX_TEXT:
        raise _Bad(f"{field}: {len(result)} characters, more than {lenient.MAX_TEXT}")
    return result


def _text(value: Any, field: str) -> str:
    if isinstance(value, dict | list):
        raise _Bad(f"{field}: expected text, got a JSON {'object' if isinstance(value, dict) else 'array'}")
    return lenient.text(value)


def _group(spec: Getter | Mapping[str, Getter] | None, element: Any, doc: Any, field: str) -> dict[str, str]:
    """labels/annotations: one expression giving an object, or one extract per name."""
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        pairs = {
            key: _text(_run(getter, element, doc, f"{field}.{key}"), f"{field}.{key}") for key, getter in spec.items()
        }
    else:
        found = _run(spec, element, doc, field)
        if found is None:
            return {}
        if not isinstance(found, dict):
            raise _Bad(f"{field}: the expression must give an object, got a {type(found).__name__}")
        pairs = {str(key): lenient.text(item) for key, item in found.items()}
    return {key: item for key, item in pairs.items() if item}


E = TypeVar("E", Severity, Status)


def _enum(kind: type[E], said: str) -> E | None:
    try:
        return kind(said) if said else None
    except ValueError:
        return None


def _time(value: Any, field: str) -> datetime | None:
    """ISO 8601 text, or a Unix time in seconds or (above 10^11) milliseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, bool | dict | list):
        raise _Bad(f"{field}: expected a time, got {type(value).__name__}")
    number = value if isinstance(value, int | float) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    try:
        if number is not None:
            per_second = 1000 if abs(number) > 1e11 else 1
            return lenient.epoch(str(number), field, per_second=per_second)
        at = datetime.fromisoformat(str(value))
    except (ValueError, PayloadError) as exc:
        raise _Bad(f"{field}: {str(value)[:40]!r} is not an ISO 8601 time or a Unix time") from exc
    try:
        return in_range(at.replace(tzinfo=UTC) if at.tzinfo is None else at)
    except ValueError as exc:
        raise _Bad(f"{field}: {exc}") from None


ADAPTER = SourceAdapter(kind="generic", parse=parse, options=GenericOptions)
