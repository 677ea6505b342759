"""What feed_service and edge_service share: the symbol rule (:mod:`.symbols`), log set-up with
secret redaction (:mod:`.logs`, :mod:`.redaction`), the settings both declare (:mod:`.settings`),
the start-up sequence of a service's ``__main__`` (:mod:`.startup`) and a service's metrics
registry (:mod:`.metrics`)."""
