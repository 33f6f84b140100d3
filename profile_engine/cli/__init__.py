"""The command line: the application edge that wires the domain to Kafka and DuckDB."""
