"""The live engine: one process that folds the log and answers over HTTP and a web page.

An application shell like the CLI: it may import every package; only the CLI imports it.
Modules that the CLI loads for its own use (``discovery``, ``client``) need nothing beyond
the standard library, so the query commands stay fast.
"""
