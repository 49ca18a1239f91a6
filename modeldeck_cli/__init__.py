"""`modeldeck`: the remote command line of ModelDeck. It talks only to the REST API (/api/v1/)
with a REST-scope key; it imports nothing of the server (no Django), only the standard library,
httpx and PyYAML."""

__all__ = ["main"]

from modeldeck_cli.main import main
