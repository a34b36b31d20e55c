"""core: the shared library every app uses (errors, realtime events, the channel layer, the
batcher, validation, pagination, throttling, the REST error format, the lean WebSocket protocol).
It imports no app of the project; apps plug in through its signals and registries."""
