"""The local stack: the same handlers as in AWS, an embedded AWS (moto server), an HTTP API on 127.0.0.1."""
