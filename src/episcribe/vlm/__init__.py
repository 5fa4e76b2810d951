"""The vision-language model: client, run-wide slots, server lifecycle, fake server.

``client`` talks to any OpenAI-compatible endpoint; ``slots`` caps requests in flight
across every job of a run; ``server`` alone starts, reuses and stops model servers;
``fake_server`` is a stand-in server process for tests, demos and benchmarks.
"""
