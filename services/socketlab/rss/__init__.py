"""RSS demo: a feed server with growing feeds and a poller that never repeats an entry."""
