"""Docker and Compose containers named automatically: every running container that
publishes an HTTP port gets a name (`SERVICE.PROJECT.localhost`, `NAME.localhost`), kept
current from the Engine's event stream. docs/docker.md is the user's side of it."""
