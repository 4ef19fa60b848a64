"""Helpers that the tests and the benchmarks share: the seed's C peer and C
proxy emulated with raw pyzmq (:mod:`.cpeer`), and network-namespace
topologies with bounded child processes (:mod:`.netns`)."""
