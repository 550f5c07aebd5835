"""The store conformance suite: every role protocol's behaviour, once, against every backend."""
