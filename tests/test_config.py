"""Parsing the environment into a Config: pure logic, no server."""

from __future__ import annotations

import pytest

from watchdog.config import OPTIONS, Config, ConfigError, load_config, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("5", 5.0, id="whole-seconds"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("0s", 0.0, id="zero-seconds"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param("1m30s", 90.0, id="minutes-and-seconds"),
        pytest.param("2h", 7200.0, id="hours"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("250us", 0.00025, id="microseconds"),
    ],
)
def test_parse_duration_accepts(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "-5s", "1.5", "abc", "5 s", "1d", "٣", "1e3s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_defaults_match_the_classic_watchdog() -> None:
    config = load_config({"fprocess": "cat"})
    assert config.fprocess == ("cat",)
    assert config.port == 8080
    assert config.read_timeout == 30.0
    assert config.write_timeout == 30.0
    assert config.exec_timeout == 0.0
    assert config.max_inflight == 0
    assert config.cgi_headers is True
    assert config.combine_output is True
    assert config.marshal_request is False
    assert config.content_type is None
    assert config.metrics_port == 8081


def test_fprocess_split_like_a_shell() -> None:
    config = load_config({"fprocess": """sh -c 'echo "a b"'"""})
    assert config.fprocess == ("sh", "-c", 'echo "a b"')


def test_prefixed_name_is_read() -> None:
    config = load_config({"fprocess": "cat", "WATCHDOG_MAX_INFLIGHT": "4"})
    assert config.max_inflight == 4


def test_lower_case_name_wins_over_prefixed() -> None:
    environ = {"fprocess": "cat", "exec_timeout": "2", "WATCHDOG_EXEC_TIMEOUT": "30"}
    assert load_config(environ).exec_timeout == 2.0


@pytest.mark.parametrize("text", ["true", "TRUE", "1", "yes", "Yes"])
def test_booleans_true(text: str) -> None:
    assert load_config({"fprocess": "cat", "marshal_request": text}).marshal_request is True


@pytest.mark.parametrize("text", ["false", "False", "0", "no", "NO"])
def test_booleans_false(text: str) -> None:
    assert load_config({"fprocess": "cat", "combine_output": text}).combine_output is False


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        pytest.param("max_inflight", "-1", "a whole number", id="negative-count"),
        pytest.param("max_inflight", "four", "a whole number", id="word-count"),
        pytest.param("max_inflight", "", "a whole number", id="empty-count"),
        pytest.param("exec_timeout", "-5", "Go duration", id="negative-duration"),
        pytest.param("write_timeout", "ten", "Go duration", id="word-duration"),
        pytest.param("port", "70000", "0 to 65535", id="port-too-large"),
        pytest.param("cgi_headers", "maybe", "true, false", id="bad-boolean"),
        pytest.param("io_mode", "stream", "raw or oscar", id="bad-choice"),
        pytest.param("log_level", "loud", "DEBUG, INFO", id="bad-log-level"),
        pytest.param("max_body_size", "1TB", "KiB", id="bad-size"),
    ],
)
def test_invalid_value_names_variable_value_and_form(name: str, value: str, accepted: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config({"fprocess": "cat", name: value})
    message = str(raised.value)
    assert message.startswith(f"{name} has the invalid value {value!r}")
    assert accepted in message
    assert "\n" not in message


def test_invalid_prefixed_value_names_that_variable() -> None:
    with pytest.raises(ConfigError, match=r"^WATCHDOG_MAX_INFLIGHT has the invalid value 'x'"):
        load_config({"fprocess": "cat", "WATCHDOG_MAX_INFLIGHT": "x"})


@pytest.mark.parametrize("environ", [{}, {"fprocess": ""}, {"fprocess": "   "}])
def test_missing_fprocess_is_an_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="fprocess"):
        load_config(environ)


def test_unbalanced_quote_in_fprocess_is_an_error() -> None:
    with pytest.raises(ConfigError, match="fprocess has the invalid value"):
        load_config({"fprocess": "sh -c 'echo"})


def test_auth_token_from_named_variable() -> None:
    environ = {"fprocess": "cat", "auth_token": "env:SERVICE_TOKEN", "SERVICE_TOKEN": "s3cret"}
    assert load_config(environ).auth_token == "s3cret"


def test_auth_token_from_missing_variable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="SERVICE_TOKEN"):
        load_config({"fprocess": "cat", "auth_token": "env:SERVICE_TOKEN"})


def test_describe_masks_the_token() -> None:
    described = load_config({"fprocess": "cat", "auth_token": "s3cret"}).describe()
    assert described["auth_token"] == "****"
    assert "s3cret" not in repr(load_config({"fprocess": "cat", "auth_token": "s3cret"}))


def test_every_option_is_a_config_field() -> None:
    fields = set(Config.__dataclass_fields__)
    assert {option.name for option in OPTIONS} == fields


def test_defaults_agree_with_config_fields() -> None:
    for option in OPTIONS:
        if not option.required:
            assert Config.__dataclass_fields__[option.name].default == option.default, option.name


def test_marshal_request_with_oscar_mode_is_an_error() -> None:
    with pytest.raises(ConfigError, match="marshal_request=true has no effect with io_mode=oscar"):
        load_config({"fprocess": "cat", "marshal_request": "true", "io_mode": "oscar"})
