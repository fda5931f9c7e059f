"""ecgret firmware bridge: protocols, parsers, drivers and simulated boards over serial (pyserial)."""
