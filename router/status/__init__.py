"""The operator's status page (`GET /status`) and its JSON (`GET /status.json`): the data
(data.py), who may see it (access.py), the routes (routes.py), the page (page.py)."""
