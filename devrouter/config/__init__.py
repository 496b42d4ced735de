"""Reading configuration files: the YAML walker every file shares (yamlwalk, with file:line
errors), the router config's schema (schema: text in, a frozen devrouter.core.model.Config
out), and the hot reload of the file (reload: watch, parse, swap one snapshot)."""
