"""UDP demo: a datagram sender and a listener that accounts for every datagram."""
