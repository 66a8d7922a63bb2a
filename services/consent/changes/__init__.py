"""The consent change feed: what channels must act on, in the order it became true.

Whenever a subject's current state for a purpose *becomes* withdrawn, refused or expired, a
database trigger on ``consent_state`` adds a row to ``consent_change`` in the same transaction, so
the feed can never miss a change the ledger committed nor show one it rolled back. The erasure path
adds an ``erased`` change (purpose ``None``: every purpose) with :meth:`ChangeRepository.record_erasure`.

Positions (``seq``) are assigned when the feed is read, not when a change is written: on PostgreSQL
transactions commit in a different order than they insert, so a number taken at insert time could
appear *behind* a position a reader has already passed, and that change would be lost. Numbering
committed rows under a lock makes the positions gapless and only ever growing, so a reader that
remembers the last position it handled never skips one.
"""
