"""Settings from AIRTABLE_CACHED_* variables, overridable by keyword, validated at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from airtable_cached import Api, ConfigurationError
from airtable_cached.config import Settings


def test_defaults_and_per_user_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings = Settings.from_env({})
    assert settings.path == tmp_path / "airtable_cached" / "cache.sqlite3"
    assert (settings.mode, settings.flush, settings.max_age) == ("cache", "auto", 300.0)
    assert settings.endpoint_url == "https://api.airtable.com"


def test_environment_then_keywords():
    env = {
        "AIRTABLE_CACHED_PATH": "/tmp/x/cache.db",
        "AIRTABLE_CACHED_MAX_AGE": "60",
        "AIRTABLE_CACHED_MODE": "offline",
        "AIRTABLE_CACHED_FLUSH": "manual",
        "AIRTABLE_CACHED_ENDPOINT_URL": "http://127.0.0.1:9/",
    }
    settings = Settings.from_env(env)
    assert settings.path == Path("/tmp/x/cache.db")
    assert settings.max_age == 60 and settings.mode == "offline" and settings.flush == "manual"
    assert settings.endpoint_url == "http://127.0.0.1:9"
    assert Settings.from_env(env, mode="write-through", max_age=5).mode == "write-through"


@pytest.mark.parametrize(
    "env, named",
    [
        ({"AIRTABLE_CACHED_MODE": "fast"}, "AIRTABLE_CACHED_MODE"),
        ({"AIRTABLE_CACHED_FLUSH": "sometimes"}, "AIRTABLE_CACHED_FLUSH"),
        ({"AIRTABLE_CACHED_MAX_AGE": "soon"}, "AIRTABLE_CACHED_MAX_AGE"),
        ({"AIRTABLE_CACHED_MAX_AGE": "-1"}, "AIRTABLE_CACHED_MAX_AGE"),
        ({"AIRTABLE_CACHED_RATE_LIMIT": "0"}, "AIRTABLE_CACHED_RATE_LIMIT"),
        ({"AIRTABLE_CACHED_ENDPOINT_URL": "api.airtable.com"}, "AIRTABLE_CACHED_ENDPOINT_URL"),
        ({"AIRTABLE_CACHED_RETRIES": "0"}, "AIRTABLE_CACHED_RETRIES"),
    ],
)
def test_settings_that_make_no_sense_are_rejected_by_name(env, named):
    with pytest.raises(ConfigurationError, match=named):
        Settings.from_env(env)


def test_api_rejects_bad_keyword_settings_at_start(tmp_path):
    with pytest.raises(ConfigurationError, match="mode"):
        Api("token", path=tmp_path / "c.db", mode="turbo")
    with pytest.raises(ConfigurationError, match="colour"):
        Api("token", path=tmp_path / "c.db", colour="blue")


@pytest.mark.parametrize("token", ["patSECRET.token\n", " patSECRET", "pat\tSECRET", ""])
def test_a_token_that_cannot_be_sent_is_refused_without_echoing_it(token, tmp_path):
    with pytest.raises(ConfigurationError) as error:
        Api(token, path=tmp_path / "c.db")
    assert "SECRET" not in str(error.value)


def test_a_postgresql_url_selects_postgresql_and_stays_out_of_reprs():
    settings = Settings.from_env({"AIRTABLE_CACHED_URL": "postgresql://agent:s3cret@127.0.0.1:5432/cache"})
    assert settings.url == settings.store_location == "postgresql://agent:s3cret@127.0.0.1:5432/cache"
    assert "s3cret" not in repr(settings)


def test_a_path_as_the_url_keeps_sqlite_there(tmp_path):
    settings = Settings.from_env({}, url=str(tmp_path / "cache.db"))
    assert settings.url is None and settings.path == tmp_path / "cache.db"
    assert settings.store_location == str(tmp_path / "cache.db")
