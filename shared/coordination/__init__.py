"""Coordination across threads, processes and Function instances, kept where the work is shared: in
Azure Storage (the ``SYNC_STATE_CONTAINER`` on the images account).

TRAEDE replaces a product's whole image set with each request, so two sends of one product must never
overlap, and each must list the product after the previous send of it finished. Four kinds of blob:

``pending/<item>``
    A mark: "this product changed and waits for a send". The upload or delete that creates it enqueues
    one product message carrying the mark's generation (``gen``: one more than the last settled one, so a
    product's generations only grow); later changes only *bump* it (a conditional metadata write). Whoever
    sends the product reads the mark before listing and deletes it only if its ETag still holds, so a change
    that lands during a send is never lost: the mark survives and the product is sent again.
``settled/<item>``
    Written just before a mark is deleted after its send: the generation that was settled. A product message
    whose mark is gone is dropped only when this proves that its mark, or a newer one, was settled by a send
    that listed the product after the message was queued; otherwise (the container was deleted or emptied
    meanwhile, and generations start again from 1) the product is sent anyway: an extra complete set is
    harmless, a lost one is not.
``locks/<item>``
    Leased by whoever sends that product; renewed while held and deleted on release. A crashed holder
    blocks the product for at most ``PRODUCT_LOCK_SECONDS`` (the lease runs out).
``full-syncs/<id>``
    One per full-sync unit (the timer, a shard, the CLI) while it runs: a blob leased for
    ``FULL_SYNC_FENCE_SECONDS`` and renewed while the sync runs, with its holder in the metadata (run, host,
    pid, when it started and was last renewed). A crashed full sync's fence lapses within that time: no
    clock of any instance decides it, the lease does. Product sends take their lock first, then look for
    fences, and wait while one is up; a full sync raises its fence first, then notes which product locks are
    held, and leaves those products to their holders. Either way one of the two sees the other (both act
    on strongly consistent storage).

Every failure to read or write the container is a ``StateError`` that names ``SYNC_STATE_CONTAINER`` and
what to check. A missing container is created again by the first write.

Modules: ``state`` (the container), ``marks`` (pending marks, settled generations), ``leases`` (product locks,
full-sync fences), ``product_queue`` (the product-level operations that need all of them) and ``shards``
(cutting the nightly sync into queue messages).

May import: ``catalog``, ``engine``, ``runs``, ``storage`` and the ground floor.
"""
