"""A message's state: the record (:mod:`.record`) and every transition of it (:mod:`.machine`).

Persistence lives elsewhere (:mod:`mailgw.store`): this package knows no storage and reads no clock.
"""

from mailgw.state.record import MAX_HISTORY, Attempt, MessageRecord, MessageState, Viewer

__all__ = ["MAX_HISTORY", "Attempt", "MessageRecord", "MessageState", "Viewer"]
