"""``airtable-cached run -- python agent.py [args]``: run any Python program through the cache.

The program runs in a child process whose ``PYTHONPATH`` starts with a temporary folder holding a
``sitecustomize.py``. Python imports it at start-up, before the program's first line; it calls
:func:`airtable_cached.http.install`, so the program's ``requests`` calls to Airtable's record
endpoints (module-level ``requests.get/post/...`` and any ``requests.Session``) are answered by the
cache, then it removes itself from ``sys.path`` and runs the ``sitecustomize`` it shadows, if any.

Settings reach the child as ``AIRTABLE_CACHED_*`` environment variables (never a token: the sync
uses the token the program sends). With ``flush=auto`` (the default) the program's exit waits, at
most ``exit_timeout`` seconds, for the queued writes to reach Airtable, as with the import path.
Programs started with ``python -S`` or ``-I`` skip ``sitecustomize`` and are not intercepted.

``python -m airtable_cached.run -- python agent.py`` works without the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from airtable_cached.config import ENV_PREFIX, FLUSH_MODES, MODES, Settings
from airtable_cached.errors import ConfigurationError

__all__ = ["run_program", "run_command", "child_environment"]

#: Set in the child to the bootstrap folder (so the bootstrap can hide itself from ``sys.path``).
BOOTSTRAP_ENV = "AIRTABLE_CACHED_RUN_BOOTSTRAP"
#: Where this package can be imported from, for a child whose interpreter does not have it installed.
PACKAGE_ROOT_ENV = "AIRTABLE_CACHED_RUN_PACKAGE_ROOT"

SITECUSTOMIZE = '''\
"""Written by airtable_cached.run: intercept Airtable calls made with requests, then get out of the way.

The interception is installed when the program imports requests (at once if it already has): a
program's start-up does not pay for importing the cache (and pyairtable, requests) it may never use.
"""


def _airtable_cached_bootstrap():
    import importlib.machinery
    import importlib.util
    import os
    import sys

    here = os.environ.get("{bootstrap_env}") or os.path.dirname(os.path.abspath(__file__))
    if importlib.util.find_spec("airtable_cached") is None:
        root = os.environ.get("{package_root_env}")
        if root and root not in sys.path:
            sys.path.append(root)
    if importlib.util.find_spec("airtable_cached") is None:
        sys.stderr.write(
            "airtable-cached run: this Python (%s) cannot import airtable_cached;"
            " install airtable_cached in it or run the program with the interpreter that has it\\n"
            % (sys.executable,)
        )
        raise SystemExit(70)

    def install():
        try:
            import airtable_cached.http as cached_http
        except ImportError as exc:
            sys.stderr.write(
                "airtable-cached run: this Python (%s) cannot import airtable_cached (%s);"
                " install airtable_cached in it or run the program with the interpreter that has it\\n"
                % (sys.executable, exc)
            )
            raise SystemExit(70)
        cached_http.install()

    class InstallAfterRequests:
        """A meta path finder that lets requests import as usual, then installs the interception."""

        def find_spec(self, name, path=None, target=None):
            if name != "requests":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            exec_module = spec.loader.exec_module

            def exec_then_install(module):
                exec_module(module)
                install()

            spec.loader.exec_module = exec_then_install
            return spec

    if "requests" in sys.modules:
        install()
    else:
        sys.meta_path.insert(0, InstallAfterRequests())

    # Leave no trace on sys.path, and run the sitecustomize this one shadows.
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.abspath(here)]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", sys.path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_airtable_cached_bootstrap()
del _airtable_cached_bootstrap
'''

_SETTING_NAMES = {f.name for f in fields(Settings)}


def child_environment(settings: Mapping[str, Any], bootstrap_dir: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the program: ``base`` (default ``os.environ``) plus the settings as
    ``AIRTABLE_CACHED_*`` variables and the bootstrap folder first on ``PYTHONPATH``. A ``path``
    without a ``url`` drops the environment's ``AIRTABLE_CACHED_URL`` (as the other commands'
    ``--path`` does)."""
    env = dict(os.environ if base is None else base)
    if settings.get("path") is not None and settings.get("url") is None:
        env.pop(ENV_PREFIX + "URL", None)  # a path given names a SQLite file, whatever the environment says
    for name, value in settings.items():
        if value is None:
            continue
        if name == "path":
            value = os.path.abspath(os.path.expanduser(str(value)))
        env[ENV_PREFIX + name.upper()] = str(value)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = bootstrap_dir + (os.pathsep + existing if existing else "")
    env[BOOTSTRAP_ENV] = bootstrap_dir
    env[PACKAGE_ROOT_ENV] = str(Path(__file__).resolve().parent.parent)
    return env


def run_program(argv: Sequence[str], **settings: Any) -> int:
    """Run ``argv`` (e.g. ``["python", "agent.py", "--day", "mon"]``) with its Airtable calls made
    through ``requests`` answered by the cache. Returns the program's exit code (128 + N when it
    was killed by signal N, 127 when it cannot be started).

    ``settings`` are the keyword overrides ``airtable_cached.Api`` takes (``path``, ``mode``,
    ``flush``, ``exit_timeout``, ``endpoint_url``...); a bad one raises
    :class:`~airtable_cached.errors.ConfigurationError` before anything runs.
    """
    argv = [str(a) for a in argv]
    if not argv:
        raise ConfigurationError("run: no program given (usage: airtable-cached run -- python agent.py)")
    unknown = sorted(set(settings) - _SETTING_NAMES)
    if unknown:
        raise ConfigurationError(f"unknown setting {unknown[0]!r}")
    Settings.from_env(**settings)  # fail now, not in the child
    with tempfile.TemporaryDirectory(prefix="airtable_cached-run-") as bootstrap_dir:
        Path(bootstrap_dir, "sitecustomize.py").write_text(
            SITECUSTOMIZE.format(bootstrap_env=BOOTSTRAP_ENV, package_root_env=PACKAGE_ROOT_ENV), encoding="utf-8"
        )
        env = child_environment(settings, bootstrap_dir)
        try:
            process = subprocess.Popen(argv, env=env)
        except OSError as exc:
            sys.stderr.write(f"airtable-cached run: cannot start {argv[0]!r}: {exc}\n")
            return 127
        return _wait(process)


def _wait(process: subprocess.Popen) -> int:
    """Wait for the program; Ctrl-C reaches it too (same process group) and it decides when to stop,
    so its exit-time flush still runs."""
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            try:
                process.send_signal(signal.SIGINT)
            except OSError:
                pass
    return 128 - code if code < 0 else code


def _settings_from_context(ctx: click.Context) -> dict[str, Any]:
    """Settings a parent command group may have collected (``ctx.obj`` as a mapping or Settings)."""
    obj = ctx.find_root().obj
    found: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        source = obj.get("settings", obj)
        if isinstance(source, Mapping):
            found = {k: v for k, v in source.items() if k in _SETTING_NAMES and v is not None}
    return found


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    short_help="Run a program with its Airtable calls answered by the cache.",
)
@click.option("--path", type=click.Path(dir_okay=False), default=None, help="The cache database file.")
@click.option("--url", default=None, metavar="URL",
              help="A postgresql:// cache shared by many hosts (default: $AIRTABLE_CACHED_URL).")
@click.option("--mode", type=click.Choice(MODES), default=None, help="How reads and writes are served (default: cache).")
@click.option("--flush", "flush", type=click.Choice(FLUSH_MODES), default=None,
              help="auto: send writes in the background and at exit; manual: only on flush.")
@click.option("--max-age", type=float, default=None, help="Seconds a table is served before a refresh.")
@click.option("--exit-timeout", type=float, default=None, help="Seconds the exit waits for the queue to drain.")
@click.option("--endpoint-url", default=None, help="The Airtable the cache syncs with.")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run_command(ctx: click.Context, argv: tuple[str, ...], **options: Any) -> None:
    """Run ARGV (e.g. `-- python agent.py --day mon`) with its plain-`requests` calls to the
    Airtable API answered by the cache: reads from the local copy, writes queued and flushed,
    other hosts untouched. Exits with the program's exit code."""
    settings = _settings_from_context(ctx)
    settings.update({k: v for k, v in options.items() if v is not None})
    try:
        code = run_program(list(argv), **settings)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None
    ctx.exit(code)


if __name__ == "__main__":  # python -m airtable_cached.run -- python agent.py
    run_command(prog_name="python -m airtable_cached.run")
