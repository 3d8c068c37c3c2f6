"""Provider adapters: one module per vendor behind the `providers.base.Provider` protocol.

``types`` (normalised results), ``errors`` (what "state unknown" looks like), ``base`` (the
protocol), ``settings`` (shared settings base), ``registry`` (built-ins, plugins, HTTP client),
``testing`` (the conformance kit) and ``_http`` (shared request/parse/error plumbing).
Importing this package imports nothing else, so ``providers.types`` stays cheap.
"""
