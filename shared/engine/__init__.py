"""The sync engine: listing -> image records -> signed images -> payloads -> each partner's lane.

``sync`` is the one path every operation takes; ``lanes`` are each partner's workers, queue and breaker;
``target`` is what a lane sends to; ``grouping`` holds products of a layout that is not led by the item id;
``stopping`` and ``progress`` are how a run stops and how it tells how far it got.

May import: ``catalog``, ``partners``, ``runs`` and the ground floor. Coordination between processes is not
here: it is the floor above.
"""
