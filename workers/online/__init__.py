"""Online weak supervision at serving time: the score log, refit coordination and model publication.

Embedded mode keeps the log in memory and refits in a thread (``embedded``); distributed mode keeps
it in a capped Redis Stream, lets one replica at a time refit under a leased lock and publishes new
versions through Redis so every replica swaps atomically (``redis_log``, ``lock``, ``store``,
``subscriber``, ``coordinator``). The label model itself is ``models.online``.
"""
