"""Benchmark harness for the broker: `python -m bench [scenario ...] [--quick]`.

Every scenario runs three targets on loopback as local processes, in one invocation:
the broker (`python -m broker`), a baseline that reproduces the original prototype (Flask
development server, in-memory subscriber list, synchronous `requests.post` per subscriber inside
the publish request) and a ceiling (a raw asyncio HTTP endpoint, the cheapest server this machine
can run in Python). Ratios broker/baseline and broker/ceiling make results comparable across
machines. See docs/performance.md.
"""
