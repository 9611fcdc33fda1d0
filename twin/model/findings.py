"""Findings: what validation has to say about an input, and the input error type."""
from __future__ import annotations

from dataclasses import dataclass

from twin.model.enums import Severity


@dataclass(frozen=True, order=True)
class Finding:
    """One problem with an input.

    ``object`` names the Kubernetes object (``Kind namespace/name`` or
    ``Kind name``), ``field`` the path inside the document
    (``spec.ingress[0].toPorts[0].ports[0].port``), ``file``/``line`` where
    the value came from when known.
    """

    severity: Severity
    object: str
    field: str
    message: str
    file: str = ""
    line: int | None = None

    def render(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "") if self.file else "<input>"
        fld = f" {self.field}" if self.field else ""
        return f"{where}: {self.severity.value}: {self.object}{fld}: {self.message}"

    def as_dict(self) -> dict:
        return {
            "severity": self.severity.value,
            "object": self.object,
            "field": self.field,
            "message": self.message,
            "file": self.file,
            "line": self.line,
        }


class TwinError(Exception):
    """Root of the project's exceptions.

    TwinError
     ├── InputError        bad manifests, values or scenario (exit code 2); carries findings
     └── (datapath.errors.DatapathError, harness errors derive from it too)
    """


class InputError(TwinError):
    def __init__(self, findings: list[Finding] | tuple[Finding, ...]):
        self.findings = tuple(findings)
        super().__init__("\n".join(f.render() for f in self.findings))


def error(obj: str, field: str, message: str, file: str = "", line: int | None = None) -> Finding:
    return Finding(Severity.ERROR, obj, field, message, file, line)


def warning(obj: str, field: str, message: str, file: str = "", line: int | None = None) -> Finding:
    return Finding(Severity.WARNING, obj, field, message, file, line)
