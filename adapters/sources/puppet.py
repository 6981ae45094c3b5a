"""Puppet's built-in `http` report processor: one run report (one node) per request.

Format: the processor POSTs `report.to_yaml`, the YAML dump of a `Puppet::Transaction::Report`, with
`Content-Type: application/x-yaml` to the `reporturl` setting (Puppet's "Report reference",
https://puppet.com/docs/puppet/8/report; lib/puppet/reports/http.rb). The fields are those of the
report format (https://puppet.com/docs/puppet/8/format_report): `host`, `time`, `status` (failed,
changed, unchanged), `logs` (level, message, source), `resource_statuses` (failed, events, ...).

The dump is Ruby's, with object tags (`--- !ruby/object:Puppet::Transaction::Report`, and in older
agents `!ruby/object:Puppet::Util::Log`, `!ruby/sym`, ... inside): a plain `yaml.safe_load` refuses
them, and a full loader would construct what the tag names. So every tag the safe loader does not
know is read as the plain mapping, sequence or scalar it tags, and nothing else is ever constructed;
aliases are allowed (Ruby's Psych writes them for an object dumped twice) but a document whose aliases
expand past a bound (a "billion laughs") or nest too deep is refused before it is walked.

Authentication: the processor sends no header of its own, but a `reporturl` with userinfo
(`https://puppet:<secret>@bridge.example/webhook/puppet`) makes it send HTTP basic auth
(http.rb: `options[:basic_auth]`), so the source's secret is accepted as the basic-auth password
(any user name) or, from a proxy or a custom processor, as `Authorization: Bearer <secret>`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from adapters.sources import lenient
from bridge.core.errors import AuthError, PayloadError
from bridge.core.models import Alert, Severity, Status
from bridge.core.source import ParseContext, Parsed, SourceAdapter

MAX_DEPTH = 32  # a report is 5-6 levels deep (report → resource_statuses → status → events → event)
MAX_NODES = 200_000  # nodes after aliases are expanded: far above a report of thousands of resources
MAX_RESOURCES = 20  # failed resources listed in the description
MAX_MESSAGES = 5  # error-level messages listed per failed resource
MAX_MESSAGE = 500  # characters of one message
MAX_DESCRIPTION = 8_000
# Log levels that count as errors (Puppet::Util::Log levels, lib/puppet/util/log.rb).
ERROR_LEVELS = frozenset({"err", "alert", "emerg", "crit"})
CONTENT_TYPES = frozenset({"application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml", "application/json"})


class PuppetOptions(BaseModel):
    """Per-source settings for the puppet kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: Severity = Severity.MAJOR  # of a failed run
    max_resources: int = Field(MAX_RESOURCES, ge=1, le=200)


class _Loader(yaml.SafeLoader):
    """The safe loader, bounded, with every unknown tag (`!ruby/...`) read as its plain node."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise PayloadError(f"report nests deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """A tagged node as what it is written as: never an object of the class its tag names."""
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor(None, _plain)  # any tag the safe loader does not know


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document once aliases are expanded, without expanding them (memoised per node)."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy or depth > MAX_DEPTH:  # an alias to its own ancestor: infinite when expanded
            raise PayloadError("report has a recursive alias")
        busy.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k, depth + 1) + size(v, depth + 1)
                if total > MAX_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
                if total > MAX_NODES:
                    break
        busy.discard(key)
        sizes[key] = total
        if total > MAX_NODES:
            raise PayloadError(f"report expands to more than {MAX_NODES} values (aliases)")
        return total

    return size(root, 0)


def load_report(body: bytes) -> dict[str, Any]:
    """The report as plain data; PayloadError for anything that is not one bounded YAML mapping."""
    text = lenient.decode(body)
    try:
        loader = _Loader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise PayloadError(f"not a YAML report: {str(exc)[:200]}") from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise PayloadError("empty report")
        _expanded_size(root)
        doc = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise PayloadError(f"not a YAML report: {str(exc)[:200]}") from None
    except (TypeError, ValueError, RecursionError) as exc:  # an unhashable key, a bad timestamp
        raise PayloadError(f"unreadable report: {str(exc)[:200]}") from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict):
        raise PayloadError("body must be a Puppet::Transaction::Report (a YAML mapping with host and status)")
    return doc


def parse(body: bytes, content_type: str, headers: Mapping[str, str], ctx: ParseContext) -> Parsed:
    opts = lenient.options(PuppetOptions, ctx.options, ctx.source)
    report = load_report(body)
    host = _text(report.get("host"))[:255]
    if not host:
        raise PayloadError("host missing: not a Puppet report (Puppet::Transaction::Report has host)")
    run_status = _text(report.get("status")).lower()
    if not run_status:
        raise PayloadError("status missing: expected failed, changed or unchanged")
    statuses = report.get("resource_statuses")
    statuses = statuses if isinstance(statuses, dict) else {}
    failed = [
        (_text(name), status)
        for name, status in statuses.items()
        if isinstance(status, dict) and status.get("failed") is True
    ]
    logs = [log for log in _list(report.get("logs")) if isinstance(log, dict)]
    errors = [log for log in logs if _text(log.get("level")).lower() in ERROR_LEVELS]
    is_failed = run_status == "failed" or bool(failed)
    run_time = _time(report.get("time"))
    environment = _text(report.get("environment"))
    labels = {
        "host": host,
        "environment": environment,
        "puppet_status": run_status,
        "puppet_version": _text(report.get("puppet_version")),
        "configuration_version": _text(report.get("configuration_version")),
        "noop": "true" if report.get("noop") is True else "",
        "failed_resources": str(len(failed)) if is_failed else "",
    }
    if is_failed:
        count = f"{len(failed)} failed resource{'s' if len(failed) != 1 else ''}" if failed else "run failed"
        summary = f"Puppet run failed on {host}: {count}"
        description = _describe(failed, errors, opts.max_resources)
    else:
        summary, description = f"Puppet run {run_status} on {host}", ""
    alert = Alert(
        source=ctx.source,
        kind="puppet",
        identity=host,  # one alert per node: its next good run clears whatever failed
        name="puppet_run",
        resource=host,
        severity=opts.severity if is_failed else Severity.OK,
        status=Status.FIRING if is_failed else Status.RESOLVED,
        summary=summary[:512],
        description=description,
        labels={key: value[:256] for key, value in labels.items() if value},
        starts_at=None,  # each failed run of a failing node is the same problem until a good run
        ends_at=None if is_failed else run_time,
        received_at=ctx.received_at,
        raw={
            "transaction_uuid": _text(report.get("transaction_uuid"))[:64],
            "report_format": _text(report.get("report_format"))[:8],
            "time": run_time.isoformat() if run_time else "",
            "failed": [name[:256] for name, _ in failed[: opts.max_resources]],
        },
    )
    return Parsed(alerts=[alert])


def _describe(failed: list[tuple[str, dict[str, Any]]], errors: list[dict[str, Any]], limit: int) -> str:
    """Each failed resource with its error messages (logs whose source is under it, else its failed
    events), then the run's other errors (a catalog that did not compile has no resource at all)."""
    budget = MAX_DESCRIPTION - 200  # room for the closing counts
    lines: list[str] = []
    listed: list[str] = []
    shown = 0
    for name, status in failed[:limit]:
        mine = [log for log in errors if _belongs(_text(log.get("source")), name)]
        messages = [_text(log.get("message")) for log in mine]
        if not messages:
            events = [e for e in _list(status.get("events")) if isinstance(e, dict)]
            messages = [_text(e.get("message")) for e in events if _text(e.get("status")) == "failure"]
        messages = [_clip(message) for message in messages if message]
        block = [f"{name[:256]}{_where(status)}:", *(f"  - {message}" for message in messages[:MAX_MESSAGES])]
        if len(messages) > MAX_MESSAGES:
            block.append(f"  (and {len(messages) - MAX_MESSAGES} more)")
        if sum(len(line) + 1 for line in lines + block) > budget:
            break
        lines.extend(block)
        listed.extend(messages[:MAX_MESSAGES])
        shown += 1
    if len(failed) > shown:
        lines.append(f"(and {len(failed) - shown} more failed resources)")
    # Errors not from a resource (whose source is its path, /Stage[main]/...): from "Puppet" itself.
    # Puppet logs a resource's error again from there (with the wrapped exception): a message that
    # begins like one listed above is that one again.
    others = [_clip(_text(log.get("message"))) for log in errors if not _text(log.get("source")).startswith("/")]
    others = [m for m in others if m and not any(m[:60] in seen for seen in listed)]
    if others:
        lines.append("Other errors:")
        lines.extend(f"  - {message}" for message in others[:MAX_MESSAGES])
        if len(others) > MAX_MESSAGES:
            lines.append(f"  (and {len(others) - MAX_MESSAGES} more)")
    text = "\n".join(lines)
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def _where(status: dict[str, Any]) -> str:
    file, line = _text(status.get("file")), _text(status.get("line"))
    if not file:
        return ""
    return f" ({file[:200]}:{line[:10]})" if line else f" ({file[:200]})"


def _belongs(source: str, resource: str) -> bool:
    """A log's source is the resource's path (`/Stage[main]/Main/File[/etc/motd]/ensure`)."""
    return bool(resource) and (f"/{resource}/" in f"{source}/" or source == resource)


def _clip(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def _text(value: Any) -> str:
    """A value as clean text; a set, bytes or a mapping with non-text keys (all valid YAML) too."""
    try:
        return lenient.text(value)
    except TypeError:  # orjson cannot write it
        return lenient.text(str(value)[:MAX_DESCRIPTION])


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _time(value: Any) -> datetime | None:
    """The run's `time` (ISO 8601 with nanoseconds in Puppet 7; a YAML timestamp in older dumps)."""
    if isinstance(value, datetime):
        moment = value
    else:
        text = _text(value)
        if not text:
            return None
        try:
            # Python reads at most microseconds: cut the fraction to six digits.
            head, dot, rest = text.partition(".")
            if dot:
                digits = len(rest) - len(rest.lstrip("0123456789"))
                rest = rest[: min(digits, 6)] + rest[digits:]
            moment = datetime.fromisoformat(head + dot + rest if dot else head)
        except ValueError:
            raise PayloadError(f"time: not an ISO 8601 time: {text[:40]!r}") from None
    if moment.tzinfo is None:
        return None
    return moment


def verify(body: bytes, headers: Mapping[str, str], query: Mapping[str, str], secret: str, now: datetime) -> None:
    """The source's secret as the basic-auth password of the `reporturl` (any user), or as a bearer token."""
    if not secret:
        raise AuthError("no secret is configured for this source")
    scheme, _, value = lenient.header(headers, "Authorization").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            _, colon, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("Authorization: Basic is not base64 of user:password") from None
        if not colon:
            raise AuthError("Authorization: Basic is not base64 of user:password")
        token = password
    elif scheme.lower() == "bearer" and value:
        token = value
    else:
        raise AuthError(
            "missing credentials: put the secret in the reporturl (https://puppet:<secret>@host/webhook/<source>)"
        )
    if not hmac.compare_digest(token.encode("utf-8", "surrogateescape"), secret.encode()):
        raise AuthError("credentials do not match this source's secret")


ADAPTER = SourceAdapter(kind="puppet", parse=parse, content_types=CONTENT_TYPES, verify=verify, options=PuppetOptions)
