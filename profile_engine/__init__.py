"""profile-engine domain: typed immutable events, identifier rules and the pure fold.

Nothing in this package (outside ``profile_engine.cli``) touches Kafka, DuckDB or the
clock, so the fold can be driven from a plain list in a unit test.
"""

__version__ = "0.1.0"
