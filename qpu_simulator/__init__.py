"""A simulated neutral-atom QPU that serves the QPU HTTP API (`/api/v1`) as the real one does.

It stands in for a QPU in tests, local runs and demos: one job at a time from its own FIFO
queue, a run time set by a shot rate, counts from a real emulator (emu-sv), an UP/DOWN
switch, injected faults, cancel semantics and specs that change at run time.

Nothing heavy is imported here: `python -m qpu_simulator` hides torch from the server
process before Pulser is imported, and only the spawned emulator process loads emu-sv.
Entry points: `qpu_simulator.app.create_app`, `qpu_simulator.server.serve`,
`qpu_simulator.__main__.main`.
"""
