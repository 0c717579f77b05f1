"""Remote repositories over SSH (docs/PROTOCOL.md): the address parser, the protocol's
frames, the client backend and ``snap serve``. Speaks only the backend interface: no file
path of the server crosses the wire but the repository directory named at open."""
