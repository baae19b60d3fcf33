"""Domain-bridging sets: choose structures of one domain (``select``), relabel them with another
task's method (``label``); ``sevenomni dbs select`` / ``label`` (``cli``)."""
