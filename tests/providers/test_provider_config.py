"""Provider configuration (actors/clients/provider_config.py): TOML and env, credentials from env vars or files, errors that name the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.clients.provider_config import SandboxProvider, Secret, SmtpProvider
from actors.config import ConfigError, load_config
from protocol.channels import Channel

PASSWORD = "hunter2-Top-Secret-77"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "herald.toml"
    path.write_text("[herald]\n" + body)
    return path


def test_no_providers_is_the_sandbox() -> None:
    assert load_config(env={}).providers_of(Channel.EMAIL) == ()


def test_an_smtp_provider_from_the_file_with_its_password_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[[herald.providers.email]]\ntype = "smtp"\nhost = "smtp.example.org"\nusername = "apikey"\n'
                           'password_env = "SMTP_PASSWORD"\ntimeout_s = 5\npool_size = 2\n')
    config = load_config(path, env={"SMTP_PASSWORD": PASSWORD})
    [smtp] = config.providers_of(Channel.EMAIL)
    assert smtp == SmtpProvider(host="smtp.example.org", port=587, tls="starttls", username="apikey", password=Secret(PASSWORD),
                                timeout_s=5.0, pool_size=2)
    assert smtp.password is not None and smtp.password.reveal() == PASSWORD
    assert PASSWORD not in repr(config) and PASSWORD not in str(config) and PASSWORD not in f"{smtp.password}"


def test_the_password_from_a_file_and_the_implicit_tls_port(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    value = json.dumps({"email": [{"type": "smtp", "host": "mail", "tls": "implicit", "username": "u", "password_file": str(secret)}]})
    [smtp] = load_config(env={"HERALD_PROVIDERS": value}).providers_of(Channel.EMAIL)
    assert isinstance(smtp, SmtpProvider) and smtp.port == 465 and smtp.password == Secret(PASSWORD)


def test_a_sandbox_provider_is_accepted() -> None:
    assert load_config(env={"HERALD_PROVIDERS": '{"sms": [{"type": "sandbox"}]}'}).providers_of(Channel.SMS) == (SandboxProvider(),)


@pytest.mark.parametrize(("providers", "named"), [
    ({"email": [{"type": "smtp"}]}, "providers.email[0].host: required"),
    ({"email": [{"type": "smtp", "host": "h", "port": 70000}]}, "providers.email[0].port"),
    ({"email": [{"type": "smtp", "host": "h", "tls": "maybe"}]}, "providers.email[0].tls"),
    ({"email": [{"type": "smtp", "host": "h", "colour": "red"}]}, "providers.email[0].colour: unknown setting"),
    ({"email": [{"type": "smtp", "host": "h", "username": "u"}]}, "give both username and password"),
    ({"email": [{"type": "smtp", "host": "h", "username": "u", "password_env": "NOT_SET_ANYWHERE"}]},
     "providers.email[0].password_env: the environment variable NOT_SET_ANYWHERE is not set"),
    ({"email": [{"type": "smtp", "host": "h", "username": "u", "password_file": "/nonexistent/pw"}]}, "providers.email[0].password_file"),
    ({"sms": [{"type": "smtp", "host": "h"}]}, "providers.sms[0].type: a smtp provider sends email, not sms"),
    ({"email": [{"type": "carrier-pigeon"}]}, "providers.email[0].type"),
    ({"web": [{"type": "sandbox"}]}, "providers.web"),
    ({"email": [{"type": "smtp", "host": "h", "helo_name": "héraut"}]}, "providers.email[0].helo_name: expected an ASCII name"),
    ({"email": [{"type": "sendgrid", "api_key_env": "K", "base_url": "ftp://x"}]}, "providers.email[0].base_url"),
    ({"email": [{"type": "smtp", "host": "a"}] * 5}, "providers.email: at most 4 providers per channel"),
])
def test_a_bad_provider_setting_is_named_on_one_line(providers: dict, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env={"HERALD_PROVIDERS": json.dumps(providers)})
    message = str(caught.value)
    assert message.startswith("HERALD_PROVIDERS: ") and named in message and "\n" not in message, message


def test_a_password_written_in_the_config_is_refused_without_being_shown(tmp_path: Path) -> None:
    path = write(tmp_path, f'[[herald.providers.email]]\ntype = "smtp"\nhost = "h"\nusername = "u"\npassword = "{PASSWORD}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "providers.email[0].password: a secret is not written in the config" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("## Sending real email", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "herald.toml"
    path.write_text(block)
    [smtp] = load_config(path, env={"HERALD_SMTP_PASSWORD": PASSWORD}).providers_of(Channel.EMAIL)
    assert isinstance(smtp, SmtpProvider) and (smtp.host, smtp.port, smtp.tls, smtp.username) == ("smtp.example.org", 587, "starttls", "apikey")
