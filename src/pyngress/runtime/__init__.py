"""All asyncio: listeners, HTTP/1.1 protocols, upstream pools, workers, swap."""
