"""What ``check`` reports: findings with a severity, and the exit code they make."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Finding:
    severity: str  # info | warning | error
    code: str
    message: str
    fixed: bool = False
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def exit_code(findings: list[Finding], *, fail_on: str = "warning") -> int:
    """0 healthy, 1 warnings, 2 errors (repaired findings do not count). With ``fail_on='error'``
    warnings exit 0, for health checks that should only fail on damage."""
    open_ = [f for f in findings if not f.fixed]
    if any(f.severity == "error" for f in open_):
        return 2
    if fail_on == "warning" and any(f.severity == "warning" for f in open_):
        return 1
    return 0
