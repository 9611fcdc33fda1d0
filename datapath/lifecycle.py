"""One lifecycle for the per-node objects that own kernel state
(:class:`~datapath.node.NodeDatapath`, :class:`~datapath.socklb.NodeSocketLB`).

``open()`` loads what is missing (idempotent; refused once closed);
``close()`` releases everything, keeps going past a failing step and raises
one error naming every failure at the end (idempotent); as a context
manager, a failed ``open()`` still releases what it had created.
Subclasses implement :meth:`_open` and :meth:`_release`.
"""
from __future__ import annotations

from typing import TypeVar

from datapath.errors import DatapathError

__all__ = ["KernelOwner"]

T = TypeVar("T", bound="KernelOwner")


class KernelOwner:
    #: raised by close() when a release step failed
    close_error: type[DatapathError] = DatapathError
    _closed: bool = False

    def _describe(self) -> str:
        return type(self).__name__

    def _open(self) -> None:
        raise NotImplementedError

    def _release(self) -> list[str]:
        """Release every kernel object; return what failed (keep going on failure)."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self: T) -> T:
        if self._closed:
            raise DatapathError(f"{self._describe()} is closed; create a new one")
        self._open()
        return self

    def close(self) -> None:
        """Release everything this object created. Safe to repeat."""
        if self._closed:
            return
        self._closed = True
        errors = self._release()
        if errors:
            raise self.close_error("; ".join(errors))

    def __enter__(self: T) -> T:
        try:
            return self.open()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
