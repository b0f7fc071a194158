"""The status page: what it shows, read from etcd (`snapshot`), made into its JSON (`state`),
and the static files the browser loads (`static/`: HTML, CSS and a little JavaScript)."""
