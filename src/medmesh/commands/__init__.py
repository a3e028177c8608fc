"""Sub-commands of the `medmesh` command line, one module per topic."""
