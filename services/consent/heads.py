"""The chain heads this process last committed, so that a lone consent write is one statement.

A lone write chains its event onto the subject's head and commits event, head and state in one
statement that applies only while the head is still the one it chained onto (compare-and-set, see
``repository._PG_APPEND_IF_HEAD``). Reading that head first was half of the write's round trips;
the head this process itself committed last is usually still the head. A stale entry (another
replica, an import, a GPC refusal, a locked write of this process) costs one failed statement that
writes nothing, after which the write reads the head as before: the cache can make a write slower,
never wrong.

Entries are only ever put from a head that has been committed, a newer one never replaced by an
older one, and dropped when a statement finds them stale. Bounded (least recently used first out).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from services.consent.chain import ChainHead

__all__ = ["DEFAULT_SUBJECTS", "ChainHeadCache"]

DEFAULT_SUBJECTS: Final = 50_000
"""Subjects held per process (~300 bytes each)."""


class ChainHeadCache:
    """Subject -> committed chain head, least recently used out first. One event loop uses it."""

    def __init__(self, max_subjects: int = DEFAULT_SUBJECTS) -> None:
        if max_subjects < 1:
            raise ValueError("the chain head cache must hold at least one subject")
        self._max = max_subjects
        self._heads: OrderedDict[str, ChainHead] = OrderedDict()

    def __len__(self) -> int:
        return len(self._heads)

    def get(self, subject_id: str) -> ChainHead | None:
        head = self._heads.get(subject_id)
        if head is not None:
            self._heads.move_to_end(subject_id)
        return head

    def committed(self, head: ChainHead) -> None:
        """``head`` was just committed: keep it, unless a longer head of the chain is held already."""
        subject_id = head.subject_id
        if subject_id is None:
            return
        held = self._heads.get(subject_id)
        if held is not None and held.chain_id == head.chain_id and held.length >= head.length:
            return
        self._heads[subject_id] = head
        self._heads.move_to_end(subject_id)
        while len(self._heads) > self._max:
            self._heads.popitem(last=False)

    def forget(self, subject_id: str, stale: ChainHead | None = None) -> None:
        """Drop the subject's entry (only if it is still ``stale``, when given)."""
        if stale is None or self._heads.get(subject_id) == stale:
            self._heads.pop(subject_id, None)
