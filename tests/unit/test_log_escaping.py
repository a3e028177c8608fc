"""Log records a request cannot forge: control characters escaped, tracebacks marked."""

from __future__ import annotations

import logging

from medmesh.config import Settings, is_loopback
from medmesh.logs import EscapingFormatter, escape_controls


def _record(message: str, *args: object, exc_info: object = None) -> logging.LogRecord:
    return logging.LogRecord("medmesh.access", logging.INFO, __file__, 1, message, args, exc_info)  # type: ignore[arg-type]


def test_control_characters_are_written_as_escapes() -> None:
    assert escape_controls("a\r\nb\x00c\x1b[31md\u2028e\x85f") == (
        "a\\r\\nb\\x00c\\x1b[31md\\u2028e\\x85f"
    )
    assert escape_controls("Ünïcode and ٢٠٢١ stay") == "Ünïcode and ٢٠٢١ stay"


def test_a_record_with_line_breaks_in_its_arguments_stays_one_line() -> None:
    formatter = EscapingFormatter("%(levelname)s %(name)s %(message)s")
    line = formatter.format(_record("%s %s", "GET", "/x\r\nINFO medmesh.access GET /forged"))
    assert line == "INFO medmesh.access GET /x\\r\\nINFO medmesh.access GET /forged"


def test_every_line_of_a_traceback_is_marked_as_a_continuation() -> None:
    try:
        raise ValueError("bad\nINFO medmesh.access GET /forged 200")
    except ValueError as error:
        record = _record("failed", exc_info=(ValueError, error, error.__traceback__))
    lines = EscapingFormatter("%(levelname)s %(message)s").format(record).split("\n")
    assert lines[0] == "INFO failed"
    assert len(lines) > 2 and all(line.startswith("| ") for line in lines[1:])


def test_only_loopback_addresses_count_as_local() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.0.2.2", "medmesh.example"):
        assert not is_loopback(host), host


def test_the_session_cookie_is_secure_off_loopback_unless_configured() -> None:
    assert Settings().bound_to("127.0.0.1").session_https_only is False
    assert Settings().bound_to("0.0.0.0").session_https_only is True
    assert Settings(session_https_only=False).bound_to("0.0.0.0").session_https_only is False


def test_forwarded_headers_are_believed_from_listed_proxies_only() -> None:
    # uvicorn never believes them; the app does, from the listed proxies only (http/forwarded.py)
    assert Settings().proxy_options()["proxy_headers"] is False
    listed = Settings(trusted_proxies=" 10.0.0.5, 10.1.0.0/16 ")
    assert listed.proxy_options()["proxy_headers"] is False
    assert listed.proxies() == ["10.0.0.5", "10.1.0.0/16"]
