"""`herald simulate`: a traffic scenario through Herald's delivery path under a virtual clock (docs/simulate.md).

    scenario.py  the scenario file, read and checked (pure)
    clients.py   the scripted providers (latency, errors, outages, throttling)
    clock.py     the virtual Trio clock: MockClock's autojump, one turn of the run loop per jump
    run.py       the node's delivery path on in-memory ports, the traffic, the per-minute figures
    report.py    the table, the CSV, the PNG
    command.py   the CLI command
"""
