"""Nagios Core: acknowledgements written as external commands to its command file.

External commands (https://assets.nagios.com/downloads/nagioscore/docs/externalcmds/):
`[time] ACKNOWLEDGE_SVC_PROBLEM;<host>;<service>;<sticky>;<notify>;<persistent>;<author>;<comment>`,
`ACKNOWLEDGE_HOST_PROBLEM;<host>;<sticky>;...`, `REMOVE_SVC_ACKNOWLEDGEMENT;<host>;<service>`,
`REMOVE_HOST_ACKNOWLEDGEMENT;<host>`, `ADD_SVC_COMMENT;<host>;<service>;<persistent>;<author>;<comment>`,
`ADD_HOST_COMMENT;<host>;<persistent>;<author>;<comment>`. Nagios splits the fields on `;` up to the last
one, which runs to the end of the line (base/commands.c), and one line is one command: so a host, service or
author with a `;`, a newline or another control character is refused (it could shift the fields or start a
second command), and the comment's newlines and control characters become spaces.

The command file is a FIFO that Nagios reads. It is opened with O_NONBLOCK, so the event loop never waits
on it: no file (Nagios is not running: it removes the pipe at exit) or no reader (ENXIO) is DeskTransient, as
is a full pipe (EAGAIN). Each write holds whole lines and at most PIPE_BUF bytes, so that the kernel writes it
at once and no other writer's command (the CGIs, another bridge replica) lands in the middle of one.

Members are found by the labels the nagios source keeps: `host`, and `service` for a service problem. A
Nagios acknowledgement does not expire; Nagios removes it itself when the problem recovers, so there is no
handle and nothing to extend.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field

from adapters.upstreams.http import DEFAULT_AUTHOR, comment, rejected
from bridge.core.errors import DeskTransient
from bridge.core.sync import Acknowledgement

PIPE_BUF = 4096  # POSIX: a pipe write of at most this many bytes is atomic (Linux: 4096)
MAX_OBJECTS = 1000  # host/service pairs per acknowledgement
_UNSAFE = re.compile(r"[;\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class NagiosUpstream(BaseModel):
    """`sources.<name>.upstream` for a nagios source."""

    model_config = ConfigDict(extra="forbid")

    command_file: str = Field(min_length=1)  # nagios.cfg's command_file, e.g. /var/lib/nagios4/rw/nagios.cmd
    author: str = Field(DEFAULT_AUTHOR, min_length=1, pattern=r"^[^;\x00-\x1f\x7f]+$")
    sticky: bool = True  # until the object recovers (2), not only until its next state change
    notify: bool = True  # Nagios sends its ACKNOWLEDGEMENT notification (the bridge recognises it as its own)
    persistent: bool = False  # the comment survives a Nagios restart

    def build(self, name: str, session: aiohttp.ClientSession) -> NagiosCommands:
        return NagiosCommands(name, self)


class NagiosCommands:
    def __init__(self, name: str, settings: NagiosUpstream) -> None:
        self.name = name
        self._settings = settings

    async def acknowledge(self, ack: Acknowledgement) -> str:
        s = self._settings
        flags = f"{2 if s.sticky else 1};{int(s.notify)};{int(s.persistent)};{s.author}"
        text = line_text(comment(ack))
        lines = [
            f"ACKNOWLEDGE_SVC_PROBLEM;{host};{service};{flags};{text}"
            if service
            else f"ACKNOWLEDGE_HOST_PROBLEM;{host};{flags};{text}"
            for host, service in self._objects("acknowledge", ack.members)
        ]
        self._write("acknowledge", lines)
        return ""

    async def extend(self, ack: Acknowledgement) -> str:
        """A Nagios acknowledgement lasts until the problem recovers or is released: nothing to extend."""
        return ack.handle

    async def release(self, ack: Acknowledgement) -> None:
        lines = [
            f"REMOVE_SVC_ACKNOWLEDGEMENT;{host};{service}" if service else f"REMOVE_HOST_ACKNOWLEDGEMENT;{host}"
            for host, service in self._objects("release", ack.members)
        ]
        self._write("release", lines)

    async def comment(self, ack: Acknowledgement, text: str) -> None:
        s = self._settings
        said = line_text(comment(ack, text))
        lines = [
            f"ADD_SVC_COMMENT;{host};{service};{int(s.persistent)};{s.author};{said}"
            if service
            else f"ADD_HOST_COMMENT;{host};{int(s.persistent)};{s.author};{said}"
            for host, service in self._objects("comment", ack.members)
        ]
        self._write("comment", lines)

    async def aclose(self) -> None:
        """Nothing held: the command file is opened per call."""

    def _objects(self, action: str, members: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
        """(host, service or "") per member, each once; a name that could break the command line is refused."""
        found: dict[tuple[str, str], None] = {}
        for labels in members:
            host, service = labels.get("host", ""), labels.get("service", "")
            if not host:
                continue
            for what, value in (("host", host), ("service", service)):
                if _UNSAFE.search(value):
                    raise rejected(
                        self.name,
                        action,
                        f"{what} name {value[:80]!r} holds ';' or a control character: it would break the "
                        "external command (or inject another), so none was written",
                    )
            found[host, service] = None
        if not found:
            raise rejected(self.name, action, "no member has a `host` label: nothing to acknowledge")
        return list(found)[:MAX_OBJECTS]

    def _write(self, action: str, lines: Iterable[str]) -> None:
        """Every line, `[time] ` first, in writes of whole lines of at most PIPE_BUF bytes each."""
        now = int(time.time())
        chunks: list[bytes] = []
        current = b""
        for line in lines:
            encoded = fit(f"[{now}] {line}")
            if len(current) + len(encoded) > PIPE_BUF:
                chunks.append(current)
                current = b""
            current += encoded
        if current:
            chunks.append(current)
        path = self._settings.command_file
        context: dict[str, Any] = {"desk": self.name, "action": action, "url": path}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_APPEND)
        except FileNotFoundError as exc:
            raise DeskTransient(f"{self.name} {action}: no {path} (Nagios not running?)", **context) from exc
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise DeskTransient(f"{self.name} {action}: no reader on {path}", **context) from exc
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise rejected(self.name, action, f"may not write {path}: {exc.strerror}", url=path) from exc
            raise DeskTransient(f"{self.name} {action}: cannot open {path}: {exc.strerror}", **context) from exc
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise rejected(self.name, action, f"{path} is not Nagios' command pipe (not a FIFO)", url=path)
            for chunk in chunks:
                try:
                    written = os.write(fd, chunk)
                except BlockingIOError as exc:
                    raise DeskTransient(f"{self.name} {action}: {path} is full (Nagios busy)", **context) from exc
                if written != len(chunk):  # cannot happen for <= PIPE_BUF on a pipe; say so if it does
                    raise DeskTransient(f"{self.name} {action}: short write to {path}", **context)
        finally:
            os.close(fd)


def line_text(text: str) -> str:
    """A comment as one line: newlines and other control characters become one space."""
    return _CONTROL.sub(" ", text).strip()


def fit(line: str) -> bytes:
    """The command line with its newline, cut (in the comment, which is last) to fit in PIPE_BUF bytes."""
    encoded = line.encode("utf-8") + b"\n"
    if len(encoded) <= PIPE_BUF:
        return encoded
    return encoded[: PIPE_BUF - 1].decode("utf-8", "ignore").encode("utf-8") + b"\n"
